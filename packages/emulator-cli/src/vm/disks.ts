import { execFile } from "node:child_process";
import { constants, copyFileSync, existsSync, renameSync, rmSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import * as v from "valibot";
import { EmulatorError } from "../core/errors.js";
import { writeFileAtomic } from "../core/fs-atomic.js";
import type { InstancePaths } from "../core/paths.js";
import { readStateFile, type Warn } from "../core/state-file.js";

const run = promisify(execFile);

/** What a failed command said: its stderr, else the error's own message. */
function commandOutput(error: unknown): string {
  return String((error as { stderr?: string }).stderr ?? (error as Error).message).trim();
}

/** A new qcow2 overlay on `backing`: the VM writes there, the backing image is never changed. */
export async function createOverlay(qemuImg: string, backing: string, overlay: string): Promise<void> {
  rmSync(overlay, { force: true });
  try {
    await run(qemuImg, ["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", backing, overlay]);
  } catch (error) {
    throw new EmulatorError(
      "DISK_FAILED",
      `qemu-img could not create ${overlay}: ${commandOutput(error)}`,
      "check free disk space and permissions under STACK_EMULATOR_HOME",
    );
  }
}

/**
 * A copy of a sparse RAM file that stays sparse: GNU cp clones where the file system can (btrfs, XFS) and copies
 * only the data extents elsewhere (ext4: done 0.3-0.5 s into the command, Node's start-up included, for the Debian
 * image's 400 MiB here); macOS clones on APFS.
 */
export async function copyRamFile(from: string, to: string): Promise<void> {
  rmSync(to, { force: true });
  if (process.platform === "darwin") {
    copyFileSync(from, to, constants.COPYFILE_FICLONE);
    return;
  }
  try {
    await run("cp", ["--sparse=always", "--reflink=auto", from, to]);
  } catch (error) {
    rmSync(to, { force: true });
    throw new EmulatorError(
      "DISK_FAILED",
      `could not copy the snapshot's RAM file to ${to}: ${commandOutput(error)}`,
      "check free disk space under STACK_EMULATOR_HOME, or set STACK_EMULATOR_INSTANCE_RAM=anonymous",
    );
  }
}

const diskRecordSchema = v.object({ imageDigest: v.string() });

/**
 * Makes the instance disk for the image `imageDigest`: `make` writes it under a temporary name, which becomes the
 * disk once whole, and only then is the image recorded. An interrupted one is never taken for a disk of the image.
 */
export async function makeInstanceDisk(
  paths: InstancePaths,
  imageDigest: string,
  make: (path: string) => Promise<void> | void,
): Promise<void> {
  rmSync(paths.diskInfo, { force: true });
  const partial = `${paths.disk}.partial`;
  try {
    await make(partial);
    renameSync(partial, paths.disk);
  } finally {
    rmSync(partial, { force: true });
  }
  writeFileAtomic(paths.diskInfo, `${JSON.stringify({ imageDigest }, null, 2)}\n`);
}

/** The instance disk as the next boot finds it: none, made for this image, or made for another (its digest). */
export type InstanceDisk = { kind: "none" } | { kind: "ours" } | { kind: "foreign"; imageDigest?: string };

export function inspectInstanceDisk(paths: InstancePaths, imageDigest: string, warn?: Warn): InstanceDisk {
  if (!existsSync(paths.disk)) return { kind: "none" };
  const recorded = readStateFile(paths.diskInfo, diskRecordSchema, { warn })?.imageDigest;
  if (recorded === imageDigest) return { kind: "ours" };
  return recorded === undefined ? { kind: "foreign" } : { kind: "foreign", imageDigest: recorded };
}

/** An instance disk made for another image cannot boot with this one: it is kept aside, not deleted. */
export function setAsideInstanceDisk(paths: InstancePaths): string {
  const aside = join(paths.dir, `disk-${Date.now()}.qcow2`);
  renameSync(paths.disk, aside);
  rmSync(paths.suspend, { recursive: true, force: true });
  return aside;
}
