import { existsSync, linkSync, mkdirSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join, relative } from "node:path";
import { writeFileAtomic } from "../core/fs-atomic.js";
import { acquireLockWaiting } from "../core/lock.js";
import type { HomeLayout } from "../core/paths.js";
import type { Image } from "../image/image.js";
import { snapshotFiles } from "./snapshot.js";

/**
 * The snapshots of one image, each immutable once captured: a recapture writes a new generation beside the old ones
 * (`snapshots/<image>/<generation>/`) and then names it in `current`. Instance disks are overlays on a generation's
 * disk, so a generation is removed only once nothing refers to it (see the instance layer's store clean-up). A
 * snapshot of an earlier version of this CLI, with its files right in `snapshots/<image>/`, counts as a generation.
 */
export interface SnapshotGenerations {
  root: string;
  /** The generation a resume uses, if any. */
  current?: string;
  /** Every generation's directory, the current one included. */
  all: string[];
}

const MANIFEST = "snapshot.json";
const CURRENT = "current";
/** The files a generation of an earlier version kept right in the image's directory. */
const LEGACY_FILES = ["ram", "state", "state.zst", "disk.qcow2", "overlay.qcow2", MANIFEST];

export function snapshotRoot(layout: HomeLayout, imageName: string): string {
  return join(layout.snapshots, imageName);
}

export function snapshotGenerations(layout: HomeLayout, imageName: string): SnapshotGenerations {
  const root = snapshotRoot(layout, imageName);
  const all: string[] = [];
  if (existsSync(join(root, MANIFEST))) all.push(root);
  try {
    for (const entry of readdirSync(root, { withFileTypes: true })) {
      if (entry.isDirectory() && entry.name.startsWith("g-")) all.push(join(root, entry.name));
    }
  } catch {
    // No snapshots of this image yet.
  }
  let current: string | undefined;
  try {
    const named = readFileSync(join(root, CURRENT), "utf8").trim();
    if (/^g-[a-z0-9-]+$/.test(named) && existsSync(join(root, named))) current = join(root, named);
  } catch {
    current = all.includes(root) ? root : undefined;
  }
  return { root, all, ...(current ? { current } : {}) };
}

/** Where the next capture of this image goes: a directory that does not exist yet. */
export function newSnapshotDir(layout: HomeLayout, imageName: string): string {
  const root = snapshotRoot(layout, imageName);
  mkdirSync(root, { recursive: true, mode: 0o700 });
  return join(root, `g-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`);
}

/** Makes a committed generation the one resumes use. */
export function publishSnapshot(generationDir: string): void {
  const root = join(generationDir, "..");
  writeFileAtomic(join(root, CURRENT), `${relative(root, generationDir)}\n`);
}

/** Removes a generation's files; an earlier version's generation leaves the newer ones beside it alone. */
export function removeGeneration(generations: SnapshotGenerations, dir: string): void {
  if (dir !== generations.root) {
    rmSync(dir, { recursive: true, force: true });
    return;
  }
  const files = snapshotFiles(dir);
  for (const name of LEGACY_FILES) rmSync(join(files.dir, name), { force: true });
}

/**
 * A path to the image's disk that stays what it is when the image is replaced (a re-pull, a rebuild): a hard link
 * under `images/.by-digest/`, named by the image's digest. Overlays (snapshot disks, instance disks) are made on it,
 * so they never find another disk under their backing file. An image outside the home, or on a file system without
 * hard links, is used where it is: its owner keeps it.
 */
export function stableImageDisk(layout: HomeLayout, image: Image): string {
  if (relative(layout.images, image.diskPath).startsWith("..")) return image.diskPath;
  const hex = image.manifest.digest.replace(/^sha256:/, "");
  const dir = join(layout.images, ".by-digest");
  const stable = join(dir, `${image.manifest.name}-${hex.slice(0, 24)}.qcow2`);
  if (existsSync(stable)) return stable;
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    linkSync(image.diskPath, stable);
    return stable;
  } catch (error) {
    // Another command linked it first: the same image by its digest.
    return (error as NodeJS.ErrnoException).code === "EEXIST" ? stable : image.diskPath;
  }
}

/**
 * Runs `fn` holding the home's snapshot store lock. Held only for moments, by what must see the store stand still:
 * a capture from its commit to its publication, a resume from reading its snapshot to the instance disk that then
 * names it, and a clean-up from finding what is in use to removing the rest. Without it a clean-up could remove
 * a generation that one of them was about to use.
 */
export async function withStoreLock<T>(
  layout: HomeLayout,
  purpose: string,
  fn: () => T | Promise<T>,
): Promise<T> {
  mkdirSync(layout.snapshots, { recursive: true, mode: 0o700 });
  const lock = await acquireLockWaiting(join(layout.snapshots, ".lock"), purpose);
  try {
    return await fn();
  } finally {
    lock.release();
  }
}
