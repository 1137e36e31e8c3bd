import { execFileSync } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough, Readable, Writable } from "node:stream";
import { afterAll, describe, expect, it } from "vitest";
import { treeFromDirectory } from "../src/fromdir.js";
import {
  buildIso,
  type IsoEntry,
  IsoError,
  writeIsoFromDirectory,
  writeIsoFromEntries,
} from "../src/index.js";
import { layout } from "../src/layout.js";
import { resolveOptions } from "../src/options.js";
import { bufferSink, writePlan } from "../src/write.js";

const work = mkdtempSync(join(tmpdir(), "iso9660-errors-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

async function codeOf(promise: Promise<unknown>): Promise<{ code: string; path?: string; message: string }> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(IsoError);
    const e = error as IsoError;
    return { code: e.code, ...(e.path === undefined ? {} : { path: e.path }), message: e.message };
  }
  throw new Error("expected an IsoError");
}

describe("invalid input is refused with a typed error naming the path", () => {
  const file = (path: string): IsoEntry => ({ type: "file", path, content: "x" });
  it.each([
    ["a/../b", [file("a/../b")], "INVALID_PATH"],
    ["./a", [file("./a")], "INVALID_PATH"],
    ["NUL in a name", [file("a\0b")], "INVALID_NAME"],
    ["a lone surrogate", [file("bad\ud800name")], "INVALID_NAME"],
    ["a 256-byte name", [file("n".repeat(256))], "INVALID_NAME"],
    ["a name of 128 characters and 256 UTF-8 bytes", [file("é".repeat(128))], "INVALID_NAME"],
    ["a duplicate", [file("dup"), file("dup")], "DUPLICATE_PATH"],
    ["a file used as a directory", [file("f"), file("f/g")], "NOT_A_DIRECTORY"],
    ["a file where the root goes", [file("/")], "INVALID_PATH"],
    ["an empty symlink target", [{ type: "symlink", path: "l", target: "" } as IsoEntry], "INVALID_NAME"],
  ])("%s", async (_, entries, code) => {
    const error = await codeOf(buildIso(entries as IsoEntry[]));
    expect(error.code).toBe(code);
    if (code !== "INVALID_PATH" || entries.length > 1) expect(error.path).toBeDefined();
    expect(error.message.length).toBeGreaterThan(20);
  });

  it("refuses bad volume ids and options", async () => {
    expect((await codeOf(buildIso([], { volumeId: "x".repeat(33) }))).code).toBe("INVALID_VOLUME_ID");
    expect((await codeOf(buildIso([], { volumeId: "" }))).code).toBe("INVALID_VOLUME_ID");
    expect((await codeOf(buildIso([], { volumeId: "café" }))).code).toBe("INVALID_VOLUME_ID");
    expect((await codeOf(buildIso([], { isoLevel: 4 as 3 }))).code).toBe("INVALID_OPTION");
    expect((await codeOf(buildIso([], { date: new Date(Number.NaN) }))).code).toBe("INVALID_OPTION");
  });

  it("takes SOURCE_DATE_EPOCH when no date is given and refuses one that is not whole seconds", () => {
    expect(resolveOptions({}, { SOURCE_DATE_EPOCH: "1700000000" })).toMatchObject({
      date: new Date(1_700_000_000_000),
      fixedDate: true,
    });
    expect(resolveOptions({ date: new Date(5000) }, { SOURCE_DATE_EPOCH: "1700000000" }).date.getTime()).toBe(
      5000,
    );
    expect(resolveOptions({}, {}).fixedDate).toBe(false);
    expect(() => resolveOptions({}, { SOURCE_DATE_EPOCH: "yesterday" })).toThrow(
      expect.objectContaining({ code: "INVALID_OPTION" }),
    );
  });

  it("refuses a stream without a size and a size that does not match a buffer", async () => {
    const stream = { type: "file", path: "s", content: () => Readable.from([]) } as IsoEntry;
    expect(await codeOf(buildIso([stream]))).toMatchObject({ code: "SIZE_REQUIRED", path: "s" });
    const wrong = { type: "file", path: "b", content: Buffer.alloc(3), size: 4 } as IsoEntry;
    expect(await codeOf(buildIso([wrong]))).toMatchObject({ code: "SIZE_MISMATCH", path: "b" });
  });

  it("refuses files of 4 GiB or more below level 3, before reading anything", async () => {
    let opened = false;
    const huge: IsoEntry = {
      type: "file",
      path: "big/huge.img",
      size: 5 * 1024 ** 3,
      content: () => {
        opened = true;
        return Readable.from([]);
      },
    };
    for (const isoLevel of [1, 2] as const) {
      const error = await codeOf(buildIso([huge], { isoLevel }));
      expect(error).toMatchObject({ code: "FILE_TOO_LARGE", path: "big/huge.img" });
      expect(error.message).toContain("isoLevel 3");
    }
    expect(opened).toBe(false);
  });
});

describe("source problems", () => {
  it("reports a missing or non-directory source", async () => {
    const missing = join(work, "nope");
    expect(await codeOf(writeIsoFromDirectory(missing, join(work, "o.iso")))).toMatchObject({
      code: "SOURCE_NOT_FOUND",
      path: missing,
    });
    const plain = join(work, "plain-file");
    writeFileSync(plain, "x");
    expect((await codeOf(writeIsoFromDirectory(plain, join(work, "o.iso")))).code).toBe("SOURCE_NOT_FOUND");
  });

  it("refuses devices, sockets and FIFOs by name", async () => {
    const src = join(work, "fifo-src");
    mkdirSync(src);
    execFileSync("mkfifo", [join(src, "pipe")]);
    expect(await codeOf(writeIsoFromDirectory(src, join(work, "fifo.iso")))).toMatchObject({
      code: "UNSUPPORTED_FILE_TYPE",
      path: join(src, "pipe"),
    });
  });

  it("refuses names that are not UTF-8", async () => {
    const src = join(work, "latin1-src");
    mkdirSync(src);
    writeFileSync(Buffer.from(`${src}/caf\xe9`, "latin1"), "x");
    expect((await codeOf(writeIsoFromDirectory(src, join(work, "latin1.iso")))).code).toBe("INVALID_NAME");
  });

  it.each([
    ["grows", 4096, 4097],
    ["shrinks", 4096, 100],
    ["grows past a whole buffer", 1 << 20, (1 << 20) + 1],
    ["disappears", 10, -1],
  ])("notices a source file that %s between layout and write", async (_, before, after) => {
    const src = join(work, `changing-${before}-${after}`);
    mkdirSync(src);
    const file = join(src, "f.bin");
    writeFileSync(file, Buffer.alloc(before, 1));
    const options = resolveOptions({ date: new Date(0) });
    const plan = layout(treeFromDirectory(src, { date: options.date, clampMtime: true }), options);
    if (after < 0) rmSync(file);
    else writeFileSync(file, Buffer.alloc(after, 2));
    const error = await codeOf(writePlan(plan, bufferSink(plan.totalSectors * 2048)));
    expect(error).toMatchObject({ code: after < 0 ? "READ_FAILED" : "SIZE_MISMATCH", path: file });
  });

  it("reports a content stream that fails as READ_FAILED", async () => {
    const failing: IsoEntry = {
      type: "file",
      path: "f",
      size: 10,
      content: () =>
        new Readable({
          read() {
            this.destroy(new Error("disk on fire"));
          },
        }),
    };
    const error = await codeOf(buildIso([failing]));
    expect(error).toMatchObject({ code: "READ_FAILED", path: "f" });
    expect(error.message).toContain("disk on fire");
  });
});

describe("output safety", () => {
  const failingEntries = (): IsoEntry[] => [
    { type: "file", path: "a", content: Buffer.alloc(5000, 1) },
    { type: "file", path: "b", size: 3_000_000, content: () => Readable.from([Buffer.alloc(1_000_000)]) },
  ];

  it("never leaves a partial image or a temporary file, and keeps an existing image", async () => {
    const dir = join(work, "out");
    mkdirSync(dir);
    const target = join(dir, "image.iso");
    expect((await codeOf(writeIsoFromEntries(failingEntries(), target))).code).toBe("SIZE_MISMATCH");
    expect(readdirSync(dir)).toEqual([]);
    writeFileSync(target, "previous image");
    expect((await codeOf(writeIsoFromEntries(failingEntries(), target))).code).toBe("SIZE_MISMATCH");
    expect(readdirSync(dir)).toEqual(["image.iso"]);
    expect(readFileSync(target, "utf8")).toBe("previous image");
  });

  it("reports an unwritable output path as WRITE_FAILED", async () => {
    const target = join(work, "no-such-dir", "x.iso");
    expect(await codeOf(writeIsoFromEntries([], target))).toMatchObject({
      code: "WRITE_FAILED",
      path: target,
    });
    const isDir = join(work, "a-directory");
    mkdirSync(isDir);
    expect((await codeOf(writeIsoFromEntries([], isDir))).code).toBe("WRITE_FAILED");
    expect(readdirSync(work).filter((n) => n.endsWith(".tmp"))).toEqual([]);
    expect(existsSync(target)).toBe(false);
  });

  it("reports a failing output stream as WRITE_FAILED", async () => {
    const broken = new Writable({
      write(_chunk, _enc, cb) {
        cb(new Error("EPIPE-like failure"));
      },
    });
    broken.on("error", () => {});
    expect((await codeOf(writeIsoFromEntries([], broken))).code).toBe("WRITE_FAILED");
  });

  it("honours backpressure on a slow stream and leaves it open", async () => {
    const entries: IsoEntry[] = [{ type: "file", path: "f", content: Buffer.alloc(3_000_000, 9) }];
    const date = new Date("2020-01-01T00:00:00Z");
    const expected = await buildIso(entries, { date });
    const out = new PassThrough({ highWaterMark: 1024 });
    const done = writeIsoFromEntries(entries, out, { date });
    const chunks: Buffer[] = [];
    let total = 0;
    for await (const chunk of out) {
      chunks.push(chunk as Buffer);
      total += (chunk as Buffer).length;
      await new Promise((resolve) => setImmediate(resolve));
      if (total >= expected.length) break;
    }
    expect((await done).bytes).toBe(expected.length);
    expect(Buffer.concat(chunks).equals(expected)).toBe(true);
    expect(out.writableEnded).toBe(false);
  });
});
