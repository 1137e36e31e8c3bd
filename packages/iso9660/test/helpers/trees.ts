// Random source trees for property tests, written to disk and compared after a round trip through readers.

import { execFile } from "node:child_process";
import {
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import fc from "fast-check";

export const run = promisify(execFile);

export type SpecNode =
  | { kind: "file"; data: Uint8Array; mode: number }
  | { kind: "dir"; children: Map<string, SpecNode> }
  | { kind: "symlink"; target: string };

const nameChars = fc.constantFrom(..."aAbB.-_ ~+%;é中ßÆ😀,".split(/(?:)/u));

function utf8Length(s: string): number {
  return Buffer.byteLength(s, "utf8");
}

/** Names a Linux filesystem accepts: no slash or NUL, not "." or "..", at most 255 UTF-8 bytes. */
export const nameArb = fc
  .oneof(
    { weight: 3, arbitrary: fc.stringMatching(/^[a-z][a-z0-9_-]{0,11}(\.[a-z]{1,4})?$/) },
    { weight: 2, arbitrary: fc.string({ unit: nameChars, minLength: 1, maxLength: 90 }) },
    { weight: 1, arbitrary: fc.string({ unit: "grapheme", minLength: 1, maxLength: 20 }) },
  )
  .map((s) => s.replace(/[/\u0000-\u001f\u007f]/g, "x"))
  .filter((s) => s !== "." && s !== ".." && utf8Length(s) <= 255 && utf8Length(s) > 0);

const dataArb = fc.oneof(
  { weight: 3, arbitrary: fc.uint8Array({ maxLength: 3000 }) },
  {
    weight: 1,
    arbitrary: fc.constantFrom(0, 2047, 2048, 2049, 6144).map((n) => new Uint8Array(n).fill(n % 251)),
  },
);

const targetArb = fc.oneof(
  fc.constantFrom("../x", "/etc/hostname", "a/./b", "..", "/"),
  fc.array(fc.oneof(nameArb, fc.constant("..")), { minLength: 1, maxLength: 4 }).map((p) => p.join("/")),
  fc.string({ unit: fc.constantFrom("a", "b", "/"), minLength: 300, maxLength: 600 }).map((s) => `t${s}`),
);

const leafArb: fc.Arbitrary<SpecNode> = fc.oneof(
  fc.record({ kind: fc.constant("file" as const), data: dataArb, mode: fc.constantFrom(0o644, 0o600) }),
  fc.record({ kind: fc.constant("symlink" as const), target: targetArb }),
  fc.constant({ kind: "dir" as const, children: new Map<string, SpecNode>() }),
);

export const treeArb: fc.Arbitrary<SpecNode> = fc.letrec<{ node: SpecNode; dir: SpecNode }>((tie) => ({
  node: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    {
      weight: 4,
      arbitrary: fc.record({
        kind: fc.constant("file" as const),
        data: dataArb,
        mode: fc.constantFrom(0o644, 0o600, 0o755),
      }),
    },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant("symlink" as const), target: targetArb }) },
    { weight: 2, arbitrary: tie("dir") },
  ),
  dir: fc
    .uniqueArray(fc.tuple(nameArb, tie("node")), { maxLength: 12, selector: (t) => t[0] })
    .map((entries) => ({ kind: "dir" as const, children: new Map(entries) })),
})).dir;

/** A chain of 9 to 16 nested directories, each level with a few random siblings, to force relocations. */
export const deepTreeArb: fc.Arbitrary<SpecNode> = fc
  .array(fc.tuple(nameArb, fc.array(fc.tuple(nameArb, leafArb), { maxLength: 2 })), {
    minLength: 9,
    maxLength: 16,
  })
  .map((levels) => {
    let node: SpecNode & { kind: "dir" } = { kind: "dir", children: new Map() };
    for (const [name, siblings] of levels.reverse()) {
      const children = new Map<string, SpecNode>(siblings.filter(([n]) => n !== name));
      children.set(name, node);
      node = { kind: "dir", children };
    }
    return node;
  });

/** Writes the tree under `root` with fixed mtimes, so round trips can compare times too. */
export function materialize(node: SpecNode & { kind: "dir" }, root: string, mtime: Date): void {
  mkdirSync(root, { recursive: true });
  for (const [name, child] of node.children) {
    const path = join(root, name);
    if (child.kind === "dir") materialize(child, path, mtime);
    else if (child.kind === "file") {
      writeFileSync(path, child.data, { mode: child.mode });
      utimesSync(path, mtime, mtime);
    } else symlinkSync(child.target, path);
  }
  utimesSync(root, mtime, mtime);
}

export interface Snapshot {
  type: "file" | "dir" | "symlink";
  mode?: number;
  size?: number;
  data?: Buffer;
  target?: string;
}

/** Every path under `root` with its type, permissions, content and link target. */
export function snapshot(root: string, withMode = true): Map<string, Snapshot> {
  const out = new Map<string, Snapshot>();
  const walk = (dir: string, rel: string) => {
    for (const name of readdirSync(dir).sort()) {
      const path = join(dir, name);
      const key = rel ? `${rel}/${name}` : name;
      const st = lstatSync(path);
      if (st.isDirectory()) {
        out.set(key, { type: "dir", ...(withMode ? { mode: st.mode & 0o7777 } : {}) });
        walk(path, key);
      } else if (st.isSymbolicLink()) out.set(key, { type: "symlink", target: readlinkSync(path) });
      else
        out.set(key, {
          type: "file",
          data: readFileSync(path),
          ...(withMode ? { mode: st.mode & 0o7777 } : {}),
        });
    }
  };
  walk(root, "");
  return out;
}
