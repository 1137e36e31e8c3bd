// Reads a directory tree's metadata from disk into the layout tree; file contents are read later, in order.

import { lstatSync, readdirSync, readlinkSync } from "node:fs";
import { basename, join } from "node:path";
import { IsoError } from "./errors.js";
import { type DirNode, newDir, type TreeNode, validateName } from "./tree.js";

/** What the walk reads of an entry's lstat: `fs.Stats` has it, and so may something lighter. */
export interface EntryStat {
  /** Type and permission bits, as `st_mode`. */
  mode: number;
  size: number;
  mtimeMs: number;
}

export interface WalkOptions {
  date: Date;
  /** Caps every mtime at `date`, as reproducible builds expect when SOURCE_DATE_EPOCH or a date is given. */
  clampMtime: boolean;
  /**
   * `lstat` of a path, throwing as `fs.lstatSync` does; default `fs.lstatSync`. The stack-mkiso bin, which owns
   * its process, passes one that makes no `Stats` (see fast-lstat.ts).
   */
  lstat?: (path: string) => EntryStat;
}

const S_IFMT = 0o170000;
const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;

function statOrThrow(
  path: string,
  missingCode: "SOURCE_NOT_FOUND" | "READ_FAILED",
  opts: WalkOptions,
): EntryStat {
  try {
    return opts.lstat === undefined ? lstatSync(path) : opts.lstat(path);
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code === "ENOENT" ? missingCode : "READ_FAILED";
    throw new IsoError(
      code,
      `Cannot read "${path}": ${(cause as Error).message}. Check the path and its permissions.`,
      {
        path,
        cause,
      },
    );
  }
}

/** Whole milliseconds, rounded as Node rounds `Stats.mtime` (which images made before this used). */
function mtimeOf(stats: EntryStat, opts: WalkOptions): number {
  const cap = opts.date.getTime();
  return opts.clampMtime && stats.mtimeMs > cap ? cap : Math.round(stats.mtimeMs);
}

function listFailed(path: string, cause: unknown): IsoError {
  return new IsoError(
    "READ_FAILED",
    `Cannot list "${path}": ${(cause as Error).message}. Check its permissions.`,
    {
      path,
      cause,
    },
  );
}

/**
 * Directory entry names, refusing names that are not UTF-8 instead of silently altering them. Decoding puts a
 * U+FFFD where the bytes are not UTF-8, so only a listing with one is read again as bytes and checked.
 */
function readNames(path: string): string[] {
  let names: string[];
  try {
    names = readdirSync(path);
  } catch (cause) {
    throw listFailed(path, cause);
  }
  if (!names.some((name) => name.includes("\ufffd"))) return names;
  let raw: Buffer[];
  try {
    raw = readdirSync(path, { encoding: "buffer" });
  } catch (cause) {
    throw listFailed(path, cause);
  }
  return raw.map((bytes) => {
    const name = bytes.toString("utf8");
    if (!Buffer.from(name, "utf8").equals(bytes))
      throw new IsoError("INVALID_NAME", `A name in "${path}" is not valid UTF-8; rename it.`, { path });
    return name;
  });
}

function nodeFromDisk(
  path: string,
  name: string,
  imagePath: string,
  stats: EntryStat,
  opts: WalkOptions,
): TreeNode {
  const mtimeMs = mtimeOf(stats, opts);
  const mode = stats.mode & 0o7777;
  const type = stats.mode & S_IFMT;
  if (type === S_IFREG)
    return {
      type: "file",
      name,
      path: imagePath,
      mode,
      mtimeMs,
      size: stats.size,
      source: { kind: "path", path },
    };
  if (type === S_IFLNK) {
    let target: string;
    try {
      target = readlinkSync(path);
    } catch (cause) {
      throw new IsoError("READ_FAILED", `Cannot read symlink "${path}": ${(cause as Error).message}.`, {
        path,
        cause,
      });
    }
    return { type: "symlink", name, path: imagePath, mode: 0o777, mtimeMs, target };
  }
  if (type === S_IFDIR) {
    const dir = newDir(name, imagePath, mtimeMs, mode);
    dir.implicit = false;
    addDirectoryContents(dir, path, opts);
    return dir;
  }
  throw new IsoError(
    "UNSUPPORTED_FILE_TYPE",
    `"${path}" is a device, socket or FIFO; only files, directories and symlinks go in an image. Remove it from the source.`,
    { path },
  );
}

/** Adds the contents of the directory at `path` under `dir`. Names are sorted so disk order never matters. */
export function addDirectoryContents(dir: DirNode, path: string, opts: WalkOptions): void {
  // join(path, name) for every name, normalized once: an entry name holds no slash and is never . or ..
  const prefix = join(path, "_").slice(0, -1);
  const imagePrefix = dir.path === "" ? "" : `${dir.path}/`;
  const names = readNames(path).sort();
  // Indexed: until V8 optimizes this loop, for...of allocates an iterator result per name.
  for (let i = 0; i < names.length; i++) {
    const name = names[i]!;
    const childPath = prefix + name;
    const imagePath = imagePrefix + name;
    validateName(name, imagePath);
    dir.children.set(
      name,
      nodeFromDisk(childPath, name, imagePath, statOrThrow(childPath, "READ_FAILED", opts), opts),
    );
  }
}

/** The tree of a source directory; its root takes the directory's own mode and mtime. */
export function treeFromDirectory(path: string, opts: WalkOptions): DirNode {
  const stats = statOrThrow(path, "SOURCE_NOT_FOUND", opts);
  if ((stats.mode & S_IFMT) !== S_IFDIR)
    throw new IsoError(
      "SOURCE_NOT_FOUND",
      `"${path}" is not a directory; give the directory to put in the image.`,
      {
        path,
      },
    );
  const root = newDir("", "", mtimeOf(stats, opts), stats.mode & 0o7777);
  addDirectoryContents(root, path, opts);
  return root;
}

/**
 * genisoimage's operand rule: a directory's contents are merged at the image root, any other path is added
 * at the root under its own name. A name given twice is an error.
 */
export function treeFromOperands(paths: string[], opts: WalkOptions): DirNode {
  const root = newDir("", "", opts.date.getTime());
  for (const path of paths) {
    const stats = statOrThrow(path, "SOURCE_NOT_FOUND", opts);
    if ((stats.mode & S_IFMT) === S_IFDIR) {
      const sub = treeFromDirectory(path, opts);
      mergeInto(root, sub);
    } else {
      const name = basename(path);
      validateName(name, name);
      if (root.children.has(name))
        throw new IsoError("DUPLICATE_PATH", `"${name}" is given more than once; keep one source per name.`, {
          path: name,
        });
      root.children.set(name, nodeFromDisk(path, name, name, stats, opts));
    }
  }
  return root;
}

function mergeInto(target: DirNode, source: DirNode): void {
  for (const [name, child] of source.children) {
    const existing = target.children.get(name);
    if (existing === undefined) target.children.set(name, child);
    else if (existing.type === "dir" && child.type === "dir") mergeInto(existing, child);
    else
      throw new IsoError("DUPLICATE_PATH", `"${child.path}" comes from more than one source; keep one.`, {
        path: child.path,
      });
  }
}
