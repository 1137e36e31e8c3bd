import { readdirSync, rmSync, statSync } from "node:fs";
import { dirname, join, resolve, sep } from "node:path";
import type { Context } from "../core/context.js";
import { type HomeLayout, instancePaths } from "../core/paths.js";
import { backingFileOf } from "../vm/qcow2.js";
import { removeGeneration, snapshotGenerations, withStoreLock } from "../vm/snapshot-store.js";
import { instanceNames } from "./home.js";
import { readState } from "./instance-state.js";
import { readSuspend } from "./suspend.js";

/**
 * What the images and snapshots under the home are to the instances: every file outside an instance's own directory
 * that it cannot do without, with the instances that need it. An instance needs the base of each of its disks (read
 * from the qcow2 headers, so disks of any version count, set-aside ones too) and the RAM files it runs or resumes on.
 */
export function filesInUse(layout: HomeLayout, except?: string): Map<string, string[]> {
  const users = new Map<string, string[]>();
  const use = (file: string | undefined, name: string) => {
    if (!file) return;
    const list = users.get(file) ?? [];
    if (!list.includes(name)) list.push(name);
    users.set(file, list);
  };
  for (const name of instanceNames(layout)) {
    if (name === except) continue;
    const paths = instancePaths(layout, name);
    let entries: string[] = [];
    try {
      entries = readdirSync(paths.dir);
    } catch {
      continue;
    }
    for (const entry of entries.filter((e) => e.endsWith(".qcow2"))) {
      const base = backingFileOf(join(paths.dir, entry));
      if (base) use(resolve(paths.dir, base), name);
    }
    const running = readState(paths)?.ram;
    if (running?.kind === "file") use(running.path, name);
    const saved = readSuspend(paths)?.ram;
    if (saved?.kind === "file") use(saved.path, name);
  }
  return users;
}

/** The instances that use a file in `dir` (for the legacy generation `snapshots/<image>`, a file right in it). */
function usersOf(dir: string, users: Map<string, string[]>, flat = false): string[] {
  const names = new Set<string>();
  for (const [file, list] of users) {
    if (flat ? dirname(file) === dir : file.startsWith(`${dir}${sep}`))
      for (const name of list) names.add(name);
  }
  return [...names].sort();
}

/** Every image name with snapshots under the home. */
function snapshotImages(layout: HomeLayout): string[] {
  try {
    return readdirSync(layout.snapshots, { withFileTypes: true })
      .filter((entry) => entry.isDirectory() && !entry.name.startsWith("."))
      .map((entry) => entry.name);
  } catch {
    return [];
  }
}

export interface Kept {
  path: string;
  usedBy: string[];
}

/**
 * Removes snapshot generations nothing uses (with `keepCurrent`, never an image's current one), then the image disks
 * under `images/.by-digest/` that neither an instance, a remaining snapshot nor a stored image uses. Returns what
 * stayed because an instance uses it.
 */
function removeUnused(layout: HomeLayout, users: Map<string, string[]>, keepCurrent: boolean): Kept[] {
  const kept: Kept[] = [];
  const bases = new Set<string>();
  for (const image of snapshotImages(layout)) {
    const generations = snapshotGenerations(layout, image);
    for (const dir of generations.all) {
      const usedBy = usersOf(dir, users, dir === generations.root);
      if (usedBy.length > 0) kept.push({ path: dir, usedBy });
      if (usedBy.length > 0 || (keepCurrent && dir === generations.current)) {
        const base = backingFileOf(join(dir, "disk.qcow2"));
        if (base) bases.add(resolve(dir, base));
        continue;
      }
      removeGeneration(generations, dir);
    }
    if (!keepCurrent && snapshotGenerations(layout, image).all.length === 0) {
      rmSync(generations.root, { recursive: true, force: true });
    }
  }
  const byDigest = join(layout.images, ".by-digest");
  let disks: string[] = [];
  try {
    disks = readdirSync(byDigest);
  } catch {
    // No image was ever linked.
  }
  for (const name of disks) {
    const disk = join(byDigest, name);
    const usedBy = users.get(disk) ?? [];
    if (usedBy.length > 0) kept.push({ path: disk, usedBy });
    // A second link is the stored image's own disk: it goes with its image.
    if (usedBy.length > 0 || bases.has(disk) || statSync(disk).nlink > 1) continue;
    rmSync(disk, { force: true });
  }
  return kept;
}

/** After a capture: the image's older snapshot generations that no instance uses any more are removed. */
export function removeUnusedSnapshots(ctx: Context): Promise<void> {
  return withStoreLock(ctx.layout, "clean-up", () => {
    removeUnused(ctx.layout, filesInUse(ctx.layout), true);
  });
}

/**
 * `reset --images`: every image and snapshot that no other instance uses is removed; what one uses is kept and
 * listed with its users (`--force` resets those instances first, so nothing is kept).
 */
export function removeImagesAndSnapshots(ctx: Context): Promise<Kept[]> {
  return withStoreLock(ctx.layout, "reset", () => removeAll(ctx));
}

function removeAll(ctx: Context): Kept[] {
  const { layout } = ctx;
  const users = filesInUse(layout, ctx.name);
  const kept: Kept[] = [];
  let images: string[] = [];
  try {
    images = readdirSync(layout.images).filter((name) => name !== ".by-digest");
  } catch {
    // No images stored.
  }
  for (const name of images) {
    const dir = join(layout.images, name);
    const usedBy = usersOf(dir, users);
    if (usedBy.length > 0) kept.push({ path: dir, usedBy });
    else rmSync(dir, { recursive: true, force: true });
  }
  return [...kept, ...removeUnused(layout, users, false)];
}
