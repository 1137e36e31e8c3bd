// The exact bytes of a few images, pinned: changes made for speed must not change one byte, and the digests
// were taken from the writer before those changes (same input and date give the same image, on any machine).

import { createHash } from "node:crypto";
import {
  chmodSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { buildIso, type IsoEntry, type IsoOptions, writeIsoFromDirectory } from "../src/index.js";
import { layout } from "../src/layout.js";
import { resolveOptions } from "../src/options.js";
import { treeFromEntries } from "../src/tree.js";
import { bufferSink, writePlan } from "../src/write.js";

const work = mkdtempSync(join(tmpdir(), "iso9660-digest-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));
const DATE = new Date("2024-03-04T05:06:07Z");
const sha256 = (image: Buffer) => createHash("sha256").update(image).digest("hex");

/** Files of every size class across a few directories, with distinct contents, modes and mtimes. */
function manyFiles(): IsoEntry[] {
  const sizes = [0, 1, 2047, 2048, 2049, 4096, 5000];
  const entries: IsoEntry[] = [];
  for (let d = 0; d < 3; d++)
    for (let f = 0; f < 40; f++)
      entries.push({
        type: "file",
        path: `dir-${d}/file-${String(f).padStart(3, "0")}.dat`,
        content: Buffer.alloc(sizes[f % sizes.length]!, d * 40 + f),
        mode: f % 3 === 0 ? 0o755 : 0o644,
        mtime: new Date(DATE.getTime() - (d * 40 + f) * 1000),
      });
  return entries;
}

/** Names that need mangling, collide once mangled, need NM or SL continuation, or hold forbidden characters. */
function oddNames(): IsoEntry[] {
  const names = [
    "a b.txt",
    "a_b.txt",
    "A B.TXT",
    ".hidden",
    "noext",
    "trailing.",
    "x.verylongextensionthatkeepsgoing",
    "colon:star*quest?.cfg",
    "Straße.md",
    "emoji-😀.txt",
    "中文名字.yaml",
    `${"n".repeat(100)}.yaml`,
    `${"é".repeat(120)}.txt`,
    "d".repeat(255),
  ];
  const entries: IsoEntry[] = names.map((name, i) => ({
    type: "file",
    path: `odd/${name}`,
    content: `${name}\n`,
    mtime: new Date(DATE.getTime() + i * 60_000),
  }));
  entries.push(
    { type: "dir", path: "odd/Sub Dir.d", mode: 0o700 },
    { type: "symlink", path: "odd/abs", target: "/etc/hostname" },
    { type: "symlink", path: "odd/rel", target: "../odd/./a b.txt" },
    { type: "symlink", path: "odd/long", target: `t${"ab/".repeat(200)}end` },
  );
  return entries;
}

/** A chain deeper than eight levels with a file and a symlink at each, so directories are relocated. */
function deepTree(): IsoEntry[] {
  const entries: IsoEntry[] = [];
  let path = "";
  for (let i = 1; i <= 12; i++) {
    path += `${path ? "/" : ""}level-${i}`;
    entries.push({ type: "file", path: `${path}/f${i}.txt`, content: `depth ${i}\n` });
    entries.push({ type: "symlink", path: `${path}/up`, target: ".." });
  }
  return entries;
}

const cases: [string, IsoEntry[], IsoOptions, string][] = [
  ["many files", manyFiles(), {}, "0c0bc9fb7b6e771f8158e1216aff1cff0fc66b059d7473ff567dea72a1fc0cd5"],
  [
    "odd names, level 1",
    oddNames(),
    { isoLevel: 1 },
    "6ae899d7d372da8af955c9c240be9a6cca7880a6979ff3276d6e706e5029e487",
  ],
  ["odd names", oddNames(), {}, "0ccf988a77f11ebcea173294d08f029ff77888a0f862a52b25f6ea2d39392134"],
  [
    "odd names, level 2, no Joliet",
    oddNames(),
    { isoLevel: 2, joliet: false },
    "c290c2bf571c373f2ab60e287b5cd6e1ab5e8e7241659883d6af79febac94335",
  ],
  [
    "odd names, no Rock Ridge",
    oddNames().filter((e) => e.type !== "symlink"),
    { rockRidge: false },
    "3acae079f0aac683558d3cff33d53bd8a675544d56b522cfd12ac872b6665bbf",
  ],
  ["deep tree", deepTree(), {}, "407362472d25e664d3de496d29348823cd9f72162dff5fbb0358eadcf09a8882"],
];

describe("pinned image digests", () => {
  for (const [name, entries, options, digest] of cases)
    it(`${name}`, async () => {
      expect(sha256(await buildIso(entries, { volumeId: "PINNED", date: DATE, ...options }))).toBe(digest);
    });

  it("multi-extent sections", async () => {
    const entries: IsoEntry[] = [
      { type: "file", path: "big.bin", content: Buffer.alloc(20_000, 7) },
      { type: "file", path: "edge.bin", content: Buffer.alloc(6144, 8) },
    ];
    const options = { ...resolveOptions({ date: DATE }), extents: { max: 6144, section: 4096 } };
    const plan = layout(treeFromEntries(entries, DATE), options);
    const sink = bufferSink(plan.totalSectors * 2048);
    await writePlan(plan, sink);
    expect(sha256(sink.result)).toBe("46a0ca96648a6d512fced63819c80d9f02e045e75ee9456a085cd5c75891520c");
  });

  it("a tree on disk, with modes and sub-millisecond mtimes rounded as Node rounds them", async () => {
    const src = join(work, "src");
    mkdirSync(join(src, "etc", "conf.d"), { recursive: true });
    const files: [string, string, number, number][] = [
      ["etc/hosts", "127.0.0.1 localhost\n", 0o644, 1_600_000_000.9996],
      ["etc/conf.d/app.conf", "key = value\n", 0o600, 1_600_000_000.4996],
      ["etc/run.sh", "#!/bin/sh\n", 0o755, 1_600_000_123.25],
      ["README", "read me\n", 0o644, 1_500_000_000],
    ];
    for (const [path, content, mode, mtime] of files) {
      writeFileSync(join(src, path), content);
      chmodSync(join(src, path), mode);
      utimesSync(join(src, path), mtime, mtime);
    }
    symlinkSync("etc/hosts", join(src, "hosts"));
    chmodSync(join(src, "etc", "conf.d"), 0o750);
    for (const [dir, mtime] of [
      ["etc/conf.d", 1_600_000_001.9999],
      ["etc", 1_600_000_002],
      [".", 1_600_000_003],
    ] as const)
      utimesSync(join(src, dir), mtime, mtime);
    const out = join(work, "disk.iso");
    await writeIsoFromDirectory(src, out, { volumeId: "DISK", date: DATE });
    expect(sha256(readFileSync(out))).toBe(
      "844961cdd4552a82dc5e8adff87e9493eb181b46bdc21e20894e30834561b258",
    );
  });
});
