import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import { writeIsoFromDirectory } from "../src/index.js";
import { bufferReader, inspectBuffer, plainView, readExtents, rockRidgeView } from "./helpers/parse.js";
import { deepTreeArb, materialize, run, type SpecNode, snapshot, treeArb } from "./helpers/trees.js";

const work = mkdtempSync(join(tmpdir(), "iso9660-readers-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const env = { ...process.env, LANG: "C.UTF-8", LC_ALL: "C.UTF-8" };
const asRoot = process.getuid?.() === 0;
const MTIME = new Date("2001-02-03T04:05:06Z");
let counter = 0;

/** Readers resolve symlink components, so "a//b/" and "a/b" are the same target. */
function normalizeTarget(target: string): string {
  return target.replace(/\/+/g, "/").replace(/(.)\/$/, "$1");
}

/** Decodes xorriso's shell-safe quoting ('it'"'"'s' -> it's). */
function unquote(text: string): string {
  let out = "";
  const re = /'([^']*)'|"([^"]*)"/y;
  let m: RegExpExecArray | null = re.exec(text);
  while (m !== null) {
    out += m[1] ?? m[2];
    m = re.exec(text);
  }
  return out;
}

async function roundTrip(
  tree: SpecNode & { kind: "dir" },
  options: { isoLevel: 1 | 2 | 3; joliet: boolean },
) {
  const dir = join(work, `case${counter++}`);
  const src = join(dir, "src");
  materialize(tree, src, MTIME);
  const iso = join(dir, "out.iso");
  await writeIsoFromDirectory(src, iso, { ...options, rockRidge: true, volumeId: "RANDOM", date: MTIME });
  const image = readFileSync(iso);
  const source = snapshot(src, asRoot);

  // The independent parser: structure, both-endian fields, order, path tables, then the Rock Ridge view.
  const parsed = inspectBuffer(image);
  expect(parsed.rr).toBe(true);
  const view = rockRidgeView(parsed.iso);
  expect([...view.keys()].sort()).toEqual([...source.keys()].sort());
  for (const [path, want] of source) {
    const got = view.get(path)!;
    expect(got.type, path).toBe(want.type);
    if (want.type === "file")
      expect(readExtents(bufferReader(image), got).equals(want.data!), path).toBe(true);
    if (want.type === "symlink") expect(got.target, path).toBe(normalizeTarget(want.target!));
    if (want.mode !== undefined) expect((got.mode ?? 0) & 0o7777, path).toBe(want.mode);
    if (want.type === "file") expect(got.mtime?.toISOString(), path).toBe(MTIME.toISOString());
  }

  // libarchive: extract everything and compare byte for byte.
  const out = join(dir, "x");
  await run("mkdir", ["-p", out]);
  await run("bsdtar", ["-xf", iso, "-C", out], { env });
  const extracted = snapshot(out, asRoot);
  extracted.delete("rr_moved");
  expect([...extracted.keys()].sort()).toEqual([...source.keys()].sort());
  for (const [path, want] of source) {
    const got = extracted.get(path)!;
    expect(got.type, path).toBe(want.type);
    if (want.type === "file") expect(got.data!.equals(want.data!), path).toBe(true);
    if (want.type === "symlink") expect(got.target, path).toBe(normalizeTarget(want.target!));
    if (want.mode !== undefined) expect(got.mode, path).toBe(want.mode);
  }

  // xorriso (libisofs) lists the same Rock Ridge tree.
  const xorriso = await run("xorriso", ["-indev", iso, "-find", "/", "-exec", "lsdl"], {
    env,
    maxBuffer: 64 << 20,
  });
  const listed = new Set<string>();
  for (const line of xorriso.stdout.split("\n")) {
    const at = line.indexOf(" '/");
    if (at < 0) continue;
    const quoted = line.slice(at + 1).split(" -> ")[0]!;
    listed.add(unquote(quoted).slice(1));
  }
  listed.delete("");
  listed.delete("rr_moved");
  expect([...listed].sort()).toEqual([...source.keys()].sort());

  // isovfy (cdrkit) finds no structural errors.
  const isovfy = await run("isovfy", [iso], { env });
  expect(isovfy.stdout + isovfy.stderr).toContain("No errors found");

  // isoinfo reads the Rock Ridge and Joliet directories without complaint.
  const isoinfoR = await run("isoinfo", ["-l", "-R", "-i", iso], { env, maxBuffer: 64 << 20 });
  expect(isoinfoR.stderr).toBe("");
  for (const [path, want] of source)
    if (!path.includes("/") && want.type !== "dir")
      expect(isoinfoR.stdout, path).toContain(`  ${path.split("/").pop()}`);
  if (options.joliet) {
    const joliet = plainView(parsed.joliet!);
    const isoinfoJ = await run("isoinfo", ["-l", "-J", "-i", iso], {
      env,
      maxBuffer: 64 << 20,
    });
    expect(isoinfoJ.stderr).toBe("");
    // isoinfo converts Joliet names to an 8-bit charset, so only ASCII names can be matched exactly.
    for (const path of joliet.keys()) {
      const name = path.split("/").pop()!;
      if (/^[\x20-\x7e]+$/.test(name)) expect(isoinfoJ.stdout, path).toContain(`  ${name}`);
    }
    // Names Joliet can hold unchanged come through unchanged; symlinks are not in the Joliet tree.
    for (const [path, want] of source) {
      const plain = path.split("/").every((p) => p.length <= 64 && !/[*:;?\\]|[\ud800-\udfff]/.test(p));
      if (plain && want.type !== "symlink" && !path.split("/").some((p) => p === ""))
        expect(joliet.has(path), path).toBe(true);
    }
  }

  // 7-Zip lists every entry of the tree it reads (Joliet when present).
  const sevenZip = await run("7z", ["l", "-slt", iso], { env, maxBuffer: 64 << 20 });
  expect(sevenZip.stdout).not.toMatch(/^(ERROR|WARNING)/m);
  const paths = sevenZip.stdout
    .split("\n")
    .filter((l) => l.startsWith("Path = "))
    .slice(1)
    .map((l) => l.slice(7));
  const expected = options.joliet ? plainView(parsed.joliet!) : plainView(parsed.iso);
  expect(paths.length).toBe(expected.size);
  rmSync(dir, { recursive: true, force: true });
}

describe("random trees read back by independent readers", () => {
  it("bsdtar, xorriso, isoinfo, isovfy, 7z and the test parser all see the source tree", async () => {
    await fc.assert(
      fc.asyncProperty(
        treeArb,
        fc.record({ isoLevel: fc.constantFrom(1 as const, 2 as const, 3 as const), joliet: fc.boolean() }),
        async (tree, options) => roundTrip(tree as SpecNode & { kind: "dir" }, options),
      ),
      { numRuns: 15, seed: Number(process.env.ISO_SEED ?? 42), endOnFailure: true },
    );
  }, 300_000);

  it("trees deeper than eight levels come back whole through Rock Ridge relocation", async () => {
    await fc.assert(
      fc.asyncProperty(deepTreeArb, fc.boolean(), async (tree, joliet) =>
        roundTrip(tree as SpecNode & { kind: "dir" }, { isoLevel: 3, joliet }),
      ),
      { numRuns: 6, seed: Number(process.env.ISO_SEED ?? 42), endOnFailure: true },
    );
  }, 300_000);

  it("without Rock Ridge, every file's content comes back under its Joliet or ISO 9660 name", async () => {
    const digests = (files: Map<string, { type: string; data?: Buffer }>) =>
      [...files.values()]
        .filter((f) => f.type === "file")
        .map((f) => createHash("sha256").update(f.data!).digest("hex"))
        .sort();
    await fc.assert(
      fc.asyncProperty(
        treeArb,
        fc.record({ isoLevel: fc.constantFrom(1 as const, 2 as const, 3 as const), joliet: fc.boolean() }),
        async (tree, options) => {
          const dir = join(work, `plain${counter++}`);
          const src = join(dir, "src");
          materialize(tree as SpecNode & { kind: "dir" }, src, MTIME);
          const iso = join(dir, "out.iso");
          await writeIsoFromDirectory(src, iso, { ...options, rockRidge: false, date: MTIME });
          const parsed = inspectBuffer(readFileSync(iso));
          expect(parsed.rr).toBe(false);
          expect(parsed.svd !== null).toBe(options.joliet);
          const out = join(dir, "x");
          await run("mkdir", ["-p", out]);
          await run("bsdtar", ["-xf", iso, "-C", out], { env });
          // Names change (mangled, no symlinks), contents must not.
          expect(digests(snapshot(out, false))).toEqual(digests(snapshot(src, false)));
          const view = options.joliet ? plainView(parsed.joliet!) : plainView(parsed.iso);
          const extracted = snapshot(out, false);
          for (const [path, entry] of view) {
            // libarchive composes Joliet (UTF-16) names (though not every singleton NFC maps) and drops the
            // "." of an ISO 9660 name without extension.
            const got = options.joliet
              ? (extracted.get(path) ?? extracted.get(path.normalize("NFC")))
              : extracted.get(path.replace(/\.$/, ""));
            expect(got?.type, path).toBe(entry.type);
          }
          expect((await run("isovfy", [iso], { env })).stdout).toContain("No errors found");
          rmSync(dir, { recursive: true, force: true });
        },
      ),
      { numRuns: 8, seed: Number(process.env.ISO_SEED ?? 42), endOnFailure: true },
    );
  }, 300_000);
});
