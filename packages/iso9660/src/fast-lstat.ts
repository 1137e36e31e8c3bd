// Imported by the stack-mkiso bin only (the library keeps to public APIs in its importers' processes).
//
// On Node.js 20 every fs.lstatSync builds a Stats object with four Date objects; the walk of 20,000 files spent
// more CPU on them than on its own work. The lstat binding behind fs.lstatSync gives the same numbers in an array.
// It is an internal interface, so it is used only where it gives exactly what fs.lstatSync gives for a path
// checked first, and never where asking for it would print a deprecation warning.

import { lstatSync } from "node:fs";
import type { EntryStat } from "./fromdir.js";

/** Node's lstat binding on Node.js 20 and 22: fills and returns a shared Float64Array, or throws as lstatSync. */
interface FsBinding {
  lstat(path: string, useBigint: false, req: undefined, throwIfNoEntry: true): unknown;
}

// Indices in the binding's stat array (Node's own layout: dev, mode, nlink, uid, gid, rdev, blksize, ino, size,
// blocks, then seconds and nanoseconds of atime, mtime, ctime and birthtime).
const MODE = 1;
const SIZE = 8;
const MTIME_SEC = 12;
const MTIME_NSEC = 13;

function warnsOnBinding(): boolean {
  const options = `${process.execArgv.join(" ")} ${process.env.NODE_OPTIONS ?? ""}`;
  return options.includes("--pending-deprecation") || process.env.NODE_PENDING_DEPRECATION === "1";
}

function read(values: unknown, path: string): EntryStat {
  if (!(values instanceof Float64Array) || values.length <= MTIME_NSEC)
    throw new Error(`internal: unexpected lstat result for ${path}`);
  return {
    mode: values[MODE]!,
    size: values[SIZE]!,
    // As fs.Stats computes mtimeMs.
    mtimeMs: values[MTIME_SEC]! * 1e3 + values[MTIME_NSEC]! / 1e6,
  };
}

/**
 * An lstat that makes no Stats, when this Node.js has one that agrees with fs.lstatSync on `probe` (a path
 * about to be walked); else undefined, and the walk uses fs.lstatSync.
 */
export function fastLstat(probe: string): ((path: string) => EntryStat) | undefined {
  if (warnsOnBinding()) return undefined;
  try {
    const binding = (process as unknown as { binding(name: string): FsBinding }).binding("fs");
    if (typeof binding?.lstat !== "function") return undefined;
    const fast = read(binding.lstat(probe, false, undefined, true), probe);
    const stats = lstatSync(probe);
    if (fast.mode !== stats.mode || fast.size !== stats.size || fast.mtimeMs !== stats.mtimeMs)
      return undefined;
    return (path) => read(binding.lstat(path, false, undefined, true), path);
  } catch {
    return undefined;
  }
}
