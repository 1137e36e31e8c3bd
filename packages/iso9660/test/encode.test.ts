import { describe, expect, it } from "vitest";
import { both16, both32, dirDate, directoryRecord, pathTableRecord, volumeDate } from "../src/encode.js";
import { compareIdentifiers, NameAllocator } from "../src/names.js";
import { nmEntries, slEntries, splitSystemUse } from "../src/rockridge.js";

describe("both-endian fields", () => {
  it("writes the little-endian half first and the big-endian half second", () => {
    const b = Buffer.alloc(12);
    both32(b, 0, 0x01020304);
    both16(b, 8, 0x0506);
    expect([...b]).toEqual([4, 3, 2, 1, 1, 2, 3, 4, 6, 5, 5, 6]);
  });

  it("puts both halves of extent and size in a directory record", () => {
    const r = directoryRecord({
      extent: 0x1234,
      size: 0x56789a,
      date: dirDate(new Date(0)),
      flags: 2,
      identifier: Buffer.from("AB"),
    });
    expect(r.length % 2).toBe(0);
    expect(r[0]).toBe(r.length);
    expect(r.readUInt32LE(2)).toBe(0x1234);
    expect(r.readUInt32BE(6)).toBe(0x1234);
    expect(r.readUInt32LE(10)).toBe(0x56789a);
    expect(r.readUInt32BE(14)).toBe(0x56789a);
    expect(r[35]).toBe(0); // pad byte after an even-length identifier
  });

  it("encodes the L and M path table forms", () => {
    const l = pathTableRecord(Buffer.from("DIR"), 20, 1, false);
    const m = pathTableRecord(Buffer.from("DIR"), 20, 1, true);
    expect(l.length).toBe(12);
    expect(l.readUInt32LE(2)).toBe(20);
    expect(m.readUInt32BE(2)).toBe(20);
    expect(l.readUInt16LE(6)).toBe(1);
    expect(m.readUInt16BE(6)).toBe(1);
  });
});

describe("dates", () => {
  it("records dates in UTC with a zero offset whatever the local zone", () => {
    expect([...dirDate(new Date("2024-02-29T23:59:58Z"))]).toEqual([124, 2, 29, 23, 59, 58, 0]);
  });

  it("clamps dates outside the seven-byte range instead of wrapping", () => {
    expect([...dirDate(new Date("1850-01-01T00:00:00Z"))]).toEqual([0, 1, 1, 0, 0, 0, 0]);
    expect(dirDate(new Date(Number.NaN))[0]).toBe(0);
  });

  it("writes volume dates as digits and marks unspecified ones with zeros", () => {
    const d = volumeDate(new Date("2020-01-02T03:04:05.670Z"));
    expect(d.subarray(0, 16).toString("latin1")).toBe("2020010203040567");
    expect(d[16]).toBe(0);
    expect(volumeDate(undefined).subarray(0, 16).toString("latin1")).toBe("0000000000000000");
  });
});

describe("ISO 9660 names", () => {
  it("maps names to d-characters within each level's limits", () => {
    const a = new NameAllocator();
    expect(a.iso("user-data", false, 1)).toBe("USER_DAT.;1");
    expect(a.iso("archive.tar.gz", false, 1)).toBe("ARCHIVE_.GZ;1");
    expect(a.iso("Documents.old", true, 1)).toBe("DOCUMENT");
    expect(a.iso(".bashrc", false, 2)).toBe("_BASHRC.;1");
    const long = a.iso(`${"x".repeat(40)}.markdown`, false, 2);
    expect(long).toBe(`${"X".repeat(22)}.MARKDOWN;1`);
    expect(long.length - 2).toBeLessThanOrEqual(31);
    const c = new NameAllocator();
    const ids = Array.from({ length: 120 }, () => c.iso(`x.${"e".repeat(40)}`, false, 3));
    expect(new Set(ids).size).toBe(120);
    for (const id of ids) expect(id.length - 2).toBeLessThanOrEqual(31);
  });

  it("resolves collisions deterministically and never reuses an identifier", () => {
    const a = new NameAllocator();
    const ids = ["a.txt", "A.txt", "a.TXT", "a+.txt"].map((n) => a.iso(n, false, 1));
    expect(ids).toEqual(["A.TXT;1", "A1.TXT;1", "A2.TXT;1", "A_.TXT;1"]);
    const b = new NameAllocator();
    const many = Array.from({ length: 12 }, (_, i) => b.iso(`longname${i}x`, true, 1));
    expect(new Set(many).size).toBe(12);
    for (const id of many) expect(id.length).toBeLessThanOrEqual(8);
  });

  it("keeps files and directories in one namespace", () => {
    const a = new NameAllocator();
    expect(a.iso("foo", true, 3)).toBe("FOO");
    expect(a.iso("foo", false, 3)).toBe("FOO1.;1");
  });
});

describe("Joliet names", () => {
  it("replaces forbidden and non-BMP characters", () => {
    const a = new NameAllocator();
    expect(a.joliet("a*b:c;d?e\\f", false)).toBe("a_b_c_d_e_f;1");
    expect(a.joliet("smile😀.txt", false)).toBe("smile_.txt;1");
  });

  it("truncates to 64 characters, keeping the extension, and stays unique", () => {
    const a = new NameAllocator();
    const one = a.joliet(`${"n".repeat(100)}.yaml`, false);
    const two = a.joliet(`${"n".repeat(99)}.yaml`, false);
    expect(one).toBe(`${"n".repeat(59)}.yaml;1`);
    expect(two).toBe(`${"n".repeat(58)}1.yaml;1`);
    expect(a.joliet("d".repeat(80), true)).toBe("d".repeat(64));
  });
});

describe("ECMA-119 9.3 ordering", () => {
  it("orders by name padded with spaces, then extension, then version descending", () => {
    const ids = ["B.;1", "A.TXT;1", "A.;1", "AB.;1", "A.TXT;2", "A_", "A"];
    const sorted = [...ids].sort((x, y) => compareIdentifiers(x, !x.includes(";"), y, !y.includes(";")));
    expect(sorted).toEqual(["A.;1", "A", "A.TXT;2", "A.TXT;1", "AB.;1", "A_", "B.;1"]);
  });
});

describe("Rock Ridge entries", () => {
  it("splits long names over NM entries flagged CONTINUE", () => {
    const entries = nmEntries("é".repeat(200));
    expect(entries.length).toBe(2);
    expect(entries[0]![4]).toBe(1);
    expect(entries[1]![4]).toBe(0);
    const joined = Buffer.concat(entries.map((e) => e.subarray(5))).toString("utf8");
    expect(joined).toBe("é".repeat(200));
    for (const e of entries) expect(e[2]).toBe(e.length);
  });

  it("encodes symlink components with root, parent and current flags", () => {
    const [sl] = slEntries("/a/../.");
    expect([...sl!.subarray(5)]).toEqual([0x08, 0, 0, 1, 0x61, 0x04, 0, 0x02, 0]);
  });

  it("ends every continued SL entry with an empty continued component", () => {
    const entries = slEntries(`${"abcdefghij/".repeat(60)}end`);
    expect(entries.length).toBeGreaterThan(2);
    for (const e of entries.slice(0, -1)) {
      expect(e[4]).toBe(1);
      expect([...e.subarray(e.length - 2)]).toEqual([1, 0]);
    }
  });

  it("moves what does not fit in the record to continuation areas of at most one sector", () => {
    const small = [Buffer.alloc(44), Buffer.alloc(26)];
    expect(splitSystemUse(small, 200)).toEqual({ inline: small, continuation: [] });
    const big = Array.from({ length: 20 }, () => Buffer.alloc(250));
    const split = splitSystemUse(big, 200);
    expect(split.inline.reduce((n, b) => n + b.length, 0)).toBeLessThanOrEqual(200 - 28);
    expect(split.continuation.length).toBe(3);
    for (const area of split.continuation.slice(0, -1))
      expect(area.reduce((n, b) => n + b.length, 0)).toBeLessThanOrEqual(2048 - 28);
    expect(split.inline.length + split.continuation.flat().length).toBe(20);
  });
});
