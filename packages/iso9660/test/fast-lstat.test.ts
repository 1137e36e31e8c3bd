// The bin's lstat (fast-lstat.ts) must read exactly what fs.lstatSync reads, fail as it fails, and step aside
// where it could not be trusted; the walk must give the same tree with it as without it.

import { lstatSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { fastLstat } from "../src/fast-lstat.js";
import { treeFromOperands } from "../src/fromdir.js";

const work = mkdtempSync(join(tmpdir(), "iso9660-lstat-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));
mkdirSync(join(work, "dir"));
writeFileSync(join(work, "dir", "file"), "x".repeat(5000), { mode: 0o640 });
// Sub-millisecond mtimes: the rounding of mtimeMs must match Stats' to the bit.
utimesSync(join(work, "dir", "file"), 1_700_000_000.123456, 1_700_000_000.987654);
writeFileSync(join(work, "dir", "empty"), "");
symlinkSync("file", join(work, "dir", "link"));

describe("the bin's lstat", () => {
  it("reads mode, size and mtimeMs exactly as fs.lstatSync, for files, directories and symlinks", () => {
    const lstat = fastLstat(work);
    expect(lstat).toBeTypeOf("function");
    for (const name of ["dir", "dir/file", "dir/empty", "dir/link"]) {
      const path = join(work, name);
      const stats = lstatSync(path);
      expect(lstat!(path)).toEqual({ mode: stats.mode, size: stats.size, mtimeMs: stats.mtimeMs });
    }
  });

  it("throws what fs.lstatSync throws", () => {
    const lstat = fastLstat(work)!;
    const missing = join(work, "missing");
    let expected: NodeJS.ErrnoException | undefined;
    try {
      lstatSync(missing);
    } catch (error) {
      expected = error as NodeJS.ErrnoException;
    }
    expect(() => lstat(missing)).toThrow(
      expect.objectContaining({ code: "ENOENT", message: expected!.message }),
    );
  });

  it("is not used where asking for it would print a deprecation warning, or when the probe fails", () => {
    const saved = process.env.NODE_PENDING_DEPRECATION;
    process.env.NODE_PENDING_DEPRECATION = "1";
    try {
      expect(fastLstat(work)).toBeUndefined();
    } finally {
      if (saved === undefined) delete process.env.NODE_PENDING_DEPRECATION;
      else process.env.NODE_PENDING_DEPRECATION = saved;
    }
    expect(fastLstat(join(work, "missing"))).toBeUndefined();
  });

  it("gives the walk the same tree as fs.lstatSync", () => {
    const opts = { date: new Date("2024-01-01T00:00:00Z"), clampMtime: false };
    const lstat = fastLstat(work)!;
    expect(treeFromOperands([work], { ...opts, lstat })).toEqual(treeFromOperands([work], opts));
  });
});
