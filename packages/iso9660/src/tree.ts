// The in-memory tree every image is laid out from, and its construction from `IsoEntry` lists.

import { isAscii } from "./encode.js";
import { IsoError } from "./errors.js";

export type FileContent = Buffer | string | (() => NodeJS.ReadableStream);

export type IsoEntry =
  | { type: "file"; path: string; content: FileContent; size?: number; mode?: number; mtime?: Date }
  | { type: "dir"; path: string; mode?: number; mtime?: Date }
  | { type: "symlink"; path: string; target: string; mtime?: Date };

/** Where a file's bytes come from during the write pass. */
export type DataSource =
  | { kind: "buffer"; data: Buffer }
  | { kind: "stream"; open: () => NodeJS.ReadableStream }
  | { kind: "path"; path: string };

interface NodeBase {
  name: string;
  /** Slash-separated path inside the image, used in error messages. */
  path: string;
  mode: number;
  /** Modification time in milliseconds since 1970: a number, since Stats makes each Date only when asked. */
  mtimeMs: number;
}

export interface FileNode extends NodeBase {
  type: "file";
  size: number;
  source: DataSource;
}

export interface DirNode extends NodeBase {
  type: "dir";
  children: Map<string, TreeNode>;
  /** Created because a deeper entry needed it, not listed itself. */
  implicit: boolean;
}

export interface SymlinkNode extends NodeBase {
  type: "symlink";
  target: string;
}

export type TreeNode = FileNode | DirNode | SymlinkNode;

export const DEFAULT_FILE_MODE = 0o644;
export const DEFAULT_DIR_MODE = 0o755;
export const SYMLINK_MODE = 0o777;
const MAX_NAME_BYTES = 255;
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

export function newDir(name: string, path: string, mtimeMs: number, mode = DEFAULT_DIR_MODE): DirNode {
  return { type: "dir", name, path, mode, mtimeMs, children: new Map(), implicit: true };
}

/** Splits an entry path into validated components; an empty list means the root. */
export function splitPath(path: string): string[] {
  const parts = path.split("/").filter((p) => p !== "");
  for (const part of parts) validateName(part, path);
  return parts;
}

export function validateName(name: string, path: string): void {
  if (name === "." || name === "..")
    throw new IsoError(
      "INVALID_PATH",
      `Path "${path}" contains "${name}"; give a normalized relative path.`,
      {
        path,
      },
    );
  if (name.includes("\0"))
    throw new IsoError("INVALID_NAME", `Name in "${path}" contains a NUL character; remove it.`, { path });
  // Checked for every entry of a walk: an ASCII name (most are) needs neither the regular expression nor
  // Buffer's native byte count.
  const ascii = isAscii(name);
  if (!ascii && LONE_SURROGATE.test(name))
    throw new IsoError(
      "INVALID_NAME",
      `Name in "${path}" is not valid Unicode (lone surrogate); fix the name.`,
      {
        path,
      },
    );
  if ((ascii ? name.length : Buffer.byteLength(name, "utf8")) > MAX_NAME_BYTES)
    throw new IsoError(
      "INVALID_NAME",
      `Name "${name.slice(0, 40)}..." in "${path}" is longer than ${MAX_NAME_BYTES} UTF-8 bytes; shorten it.`,
      { path },
    );
}

function permissions(mode: number | undefined, fallback: number, path: string): number {
  if (mode === undefined) return fallback;
  if (!Number.isInteger(mode) || mode < 0)
    throw new IsoError("INVALID_OPTION", `Mode of "${path}" must be a non-negative integer.`, { path });
  return mode & 0o7777;
}

function fileSource(entry: Extract<IsoEntry, { type: "file" }>): { size: number; source: DataSource } {
  const { content, path } = entry;
  if (typeof content === "function") {
    const size = entry.size;
    if (size === undefined || !Number.isSafeInteger(size) || size < 0)
      throw new IsoError(
        "SIZE_REQUIRED",
        `File "${path}" has stream content; give its exact byte count as \`size\` so the layout can be computed first.`,
        { path },
      );
    return { size, source: { kind: "stream", open: content } };
  }
  const data = typeof content === "string" ? Buffer.from(content, "utf8") : content;
  if (!Buffer.isBuffer(data))
    throw new IsoError(
      "INVALID_OPTION",
      `Content of "${path}" must be a Buffer, a string or a stream factory.`,
      {
        path,
      },
    );
  if (entry.size !== undefined && entry.size !== data.length)
    throw new IsoError(
      "SIZE_MISMATCH",
      `File "${path}" declares size ${entry.size} but its content has ${data.length} bytes; drop or fix \`size\`.`,
      { path },
    );
  return { size: data.length, source: { kind: "buffer", data } };
}

/** Builds the tree, creating missing parent directories and rejecting duplicates and file-as-parent paths. */
export function treeFromEntries(entries: IsoEntry[], date: Date): DirNode {
  const root = newDir("", "", date.getTime());
  for (const entry of entries) {
    if (entry === null || typeof entry !== "object" || typeof entry.path !== "string")
      throw new IsoError("INVALID_PATH", "Every entry needs a string `path`.");
    const parts = splitPath(entry.path);
    const display = parts.join("/");
    if (parts.length === 0) {
      if (entry.type !== "dir")
        throw new IsoError("INVALID_PATH", `Entry "${entry.path}" names the root; only a dir entry may.`, {
          path: entry.path,
        });
      root.mode = permissions(entry.mode, DEFAULT_DIR_MODE, "/");
      root.mtimeMs = (entry.mtime ?? date).getTime();
      continue;
    }
    let dir = root;
    for (let i = 0; i < parts.length - 1; i++) {
      const name = parts[i]!;
      const existing = dir.children.get(name);
      if (existing === undefined) {
        const child = newDir(name, parts.slice(0, i + 1).join("/"), date.getTime());
        dir.children.set(name, child);
        dir = child;
      } else if (existing.type === "dir") {
        dir = existing;
      } else {
        throw new IsoError(
          "NOT_A_DIRECTORY",
          `"${existing.path}" is a ${existing.type} but "${display}" needs it to be a directory.`,
          { path: display },
        );
      }
    }
    const name = parts[parts.length - 1]!;
    const existing = dir.children.get(name);
    const mtimeMs = (entry.mtime ?? date).getTime();
    if (entry.type === "dir" && existing?.type === "dir" && existing.implicit) {
      existing.implicit = false;
      existing.mode = permissions(entry.mode, DEFAULT_DIR_MODE, display);
      existing.mtimeMs = mtimeMs;
      continue;
    }
    if (existing !== undefined)
      throw new IsoError(
        "DUPLICATE_PATH",
        `"${display}" is listed more than once; keep one entry per path.`,
        {
          path: display,
        },
      );
    let node: TreeNode;
    if (entry.type === "file") {
      node = {
        type: "file",
        name,
        path: display,
        mode: permissions(entry.mode, DEFAULT_FILE_MODE, display),
        mtimeMs,
        ...fileSource(entry),
      };
    } else if (entry.type === "dir") {
      node = {
        ...newDir(name, display, mtimeMs, permissions(entry.mode, DEFAULT_DIR_MODE, display)),
        implicit: false,
      };
    } else if (entry.type === "symlink") {
      if (typeof entry.target !== "string" || entry.target === "" || entry.target.includes("\0"))
        throw new IsoError("INVALID_NAME", `Symlink "${display}" needs a non-empty target without NUL.`, {
          path: display,
        });
      node = { type: "symlink", name, path: display, mode: SYMLINK_MODE, mtimeMs, target: entry.target };
    } else {
      throw new IsoError(
        "INVALID_OPTION",
        `Entry "${display}" has type "${(entry as { type: unknown }).type}"; use file, dir or symlink.`,
        { path: display },
      );
    }
    dir.children.set(name, node);
  }
  return root;
}
