import { statfsSync } from "node:fs";
import { EmulatorError } from "./errors.js";

const MiB = 1024 * 1024;

/** Bytes an unprivileged process may still write on the file system holding `dir`; undefined where unknown. */
export function freeBytes(dir: string): number | undefined {
  try {
    const { bavail, bsize } = statfsSync(dir);
    return bavail * bsize;
  } catch {
    return undefined;
  }
}

export const formatMiB = (bytes: number) => `${Math.ceil(bytes / MiB)} MiB`;

/** "<dir> has N MiB free", for messages about a disk that filled. */
export function describeFreeSpace(dir: string): string {
  const free = freeBytes(dir);
  return `${dir} has ${free === undefined ? "unknown space" : formatMiB(free)} free`;
}

/**
 * Refuses work that writes up to `bytes` into `dir` when its file system has less free: said before anything is
 * written, with where and how much, instead of a VM that pauses on a full disk halfway through.
 */
export function requireFreeSpace(
  dir: string,
  bytes: number,
  about: { what: string; otherwise?: string },
): void {
  const free = freeBytes(dir);
  if (free === undefined || free >= bytes) return;
  throw new EmulatorError(
    "NO_SPACE",
    `${about.what} needs about ${formatMiB(bytes)} free in ${dir}, which has ${formatMiB(free)}`,
    `free space there, or set STACK_EMULATOR_HOME to a disk with room${about.otherwise ? `; ${about.otherwise}` : ""}`,
  );
}
