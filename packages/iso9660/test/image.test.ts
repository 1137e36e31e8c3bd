import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough, Readable } from "node:stream";
import { afterAll, describe, expect, it } from "vitest";
import { buildIso, type IsoEntry, writeIsoFromDirectory, writeIsoFromEntries } from "../src/index.js";
import { bufferReader, inspectBuffer, plainView, readExtents, rockRidgeView } from "./helpers/parse.js";
import { run, snapshot } from "./helpers/trees.js";

const work = mkdtempSync(join(tmpdir(), "iso9660-image-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));
const DATE = new Date("2024-05-06T07:08:09Z");

const cidata: IsoEntry[] = [
  { type: "file", path: "user-data", content: "#cloud-config\nhostname: test\n" },
  { type: "file", path: "meta-data", content: "instance-id: iid-1\nlocal-hostname: test\n" },
  { type: "file", path: "network-config", content: "version: 2\n" },
];

async function collect(write: (out: NodeJS.WritableStream) => Promise<unknown>): Promise<Buffer> {
  const out = new PassThrough();
  const chunks: Buffer[] = [];
  out.on("data", (c: Buffer) => chunks.push(c));
  await write(out);
  out.end();
  return Buffer.concat(chunks);
}

describe("cloud-init seed images", () => {
  it("are recognised by blkid as iso9660 with label cidata, with and without Joliet", async () => {
    for (const joliet of [true, false]) {
      const path = join(work, `cidata-${joliet}.iso`);
      writeFileSync(path, await buildIso(cidata, { volumeId: "cidata", date: DATE, joliet }));
      const { stdout } = await run("blkid", ["-p", "-o", "export", path]);
      expect(stdout).toMatch(/^TYPE=iso9660$/m);
      expect(stdout).toMatch(/^LABEL=cidata$/m);
    }
  });

  it("hold user-data and meta-data under their exact names for Rock Ridge and Joliet readers", async () => {
    const image = await buildIso(cidata, { volumeId: "cidata", date: DATE });
    const parsed = inspectBuffer(image);
    expect(parsed.primary.volumeId).toBe("cidata");
    expect(parsed.svd?.volumeId).toBe("cidata");
    const rr = rockRidgeView(parsed.iso);
    const joliet = plainView(parsed.joliet!);
    for (const entry of cidata) {
      const content = Buffer.from((entry as { content: string }).content);
      expect(readExtents(bufferReader(image), rr.get(entry.path)!).equals(content)).toBe(true);
      expect(readExtents(bufferReader(image), joliet.get(entry.path)!).equals(content)).toBe(true);
    }
  });
});

describe("reproducibility", () => {
  it("gives the same bytes for the same input and date, whatever the output kind", async () => {
    const a = await buildIso(cidata, { date: DATE });
    const b = await buildIso([...cidata].reverse(), { date: DATE });
    const path = join(work, "repro.iso");
    await writeIsoFromEntries(cidata, path, { date: DATE });
    const streamed = await collect((out) => writeIsoFromEntries(cidata, out, { date: DATE }));
    expect(b.equals(a)).toBe(true);
    expect(readFileSync(path).equals(a)).toBe(true);
    expect(streamed.equals(a)).toBe(true);
    const other = await buildIso(cidata, { date: new Date(DATE.getTime() + 1000) });
    expect(other.equals(a)).toBe(false);
  });

  it("takes the date from SOURCE_DATE_EPOCH and leaks no time zone (child processes in different zones)", async () => {
    const src = join(work, "tz-src");
    mkdirSync(join(src, "sub"), { recursive: true });
    writeFileSync(join(src, "sub", "f.txt"), "data\n");
    const cli = join(import.meta.dirname, "../src/cli.ts");
    const outputs: Buffer[] = [];
    for (const tz of ["UTC", "America/St_Johns", "Asia/Kolkata"]) {
      const out = join(work, `tz-${tz.replace("/", "_")}.iso`);
      await run(process.execPath, ["--import", "tsx", cli, "-J", "-R", "-o", out, src], {
        env: { ...process.env, TZ: tz, SOURCE_DATE_EPOCH: "1700000000" },
        cwd: import.meta.dirname,
      });
      outputs.push(readFileSync(out));
    }
    expect(outputs[1]!.equals(outputs[0]!)).toBe(true);
    expect(outputs[2]!.equals(outputs[0]!)).toBe(true);
    const parsed = inspectBuffer(outputs[0]!);
    // Source mtimes (now) are capped at SOURCE_DATE_EPOCH.
    expect(rockRidgeView(parsed.iso).get("sub/f.txt")?.mtime?.getTime()).toBe(1700000000 * 1000);
  });
});

describe("directories spanning many sectors", () => {
  it("keeps records inside sectors and sorted across thousands of entries", async () => {
    const entries: IsoEntry[] = [];
    for (let i = 0; i < 3000; i++) {
      const name = `${String(i).padStart(4, "0")}-${"long-name-".repeat(i % 20)}entry.txt`;
      entries.push({ type: "file", path: `wide/${name}`, content: i % 7 === 0 ? "" : `file ${i}\n` });
    }
    const path = join(work, "wide.iso");
    await writeIsoFromEntries(entries, path, { date: DATE, isoLevel: 1 });
    const image = readFileSync(path);
    const parsed = inspectBuffer(image);
    const wideDir = parsed.iso.root.children!.find((c) => c.rr?.name === "wide")!;
    expect(wideDir.size / 2048).toBeGreaterThan(50);
    const view = rockRidgeView(parsed.iso);
    expect(view.size).toBe(3001);
    expect((await run("isovfy", [path])).stdout).toContain("No errors found");
    const out = join(work, "wide-x");
    mkdirSync(out);
    await run("bsdtar", ["-xf", path, "-C", out]);
    const extracted = snapshot(out, false);
    for (const e of entries) {
      const want = Buffer.from((e as { content: string }).content);
      expect(extracted.get(e.path)?.data?.equals(want), e.path).toBe(true);
    }
  });
});

describe("deep trees", () => {
  const deep: IsoEntry[] = [];
  let p = "";
  for (let i = 1; i <= 20; i++) {
    p += `${p ? "/" : ""}level-${i}`;
    deep.push({ type: "file", path: `${p}/file-${i}.txt`, content: `depth ${i}\n` });
  }
  deep.push({ type: "symlink", path: `${p}/up`, target: "../../.." });

  it("relocates directories deeper than eight levels under rr_moved (Rock Ridge)", async () => {
    const path = join(work, "deep.iso");
    await writeIsoFromEntries(deep, path, { date: DATE });
    const parsed = inspectBuffer(readFileSync(path));
    const maxLevel = Math.max(...parsed.iso.dirs.map((d) => d.level));
    expect(maxLevel).toBeLessThanOrEqual(8);
    const view = rockRidgeView(parsed.iso);
    for (const e of deep) expect(view.has(e.path), e.path).toBe(true);
    // The Joliet tree keeps the real hierarchy.
    expect(plainView(parsed.joliet!).has(deep[19]!.path)).toBe(true);

    const out = join(work, "deep-x");
    mkdirSync(out);
    await run("bsdtar", ["-xf", path, "-C", out]);
    const extracted = snapshot(out, false);
    for (const e of deep) {
      const got = extracted.get(e.path);
      if (e.type === "file") expect(got?.data?.toString(), e.path).toBe(e.content);
      else expect(got?.target).toBe("../../..");
    }
    const { stdout } = await run("xorriso", ["-indev", path, "-find", "/", "-exec", "lsdl"], {
      env: { ...process.env, LANG: "C.UTF-8" },
    });
    expect(stdout).toContain(`'/${deep[19]!.path}'`);
    expect((await run("isovfy", [path])).stdout).toContain("No errors found");
  });

  it("refuses a deep tree whose root already has a directory named rr_moved", async () => {
    const entries: IsoEntry[] = [...deep, { type: "file", path: "rr_moved/mine.txt", content: "mine\n" }];
    await expect(buildIso(entries)).rejects.toMatchObject({ code: "TOO_DEEP", path: "rr_moved" });
    // Shallow trees never need the name.
    await expect(
      buildIso([{ type: "file", path: "rr_moved/mine.txt", content: "x" }]),
    ).resolves.toBeInstanceOf(Buffer);
  });

  it("refuses a deep tree without Rock Ridge, naming the directory", async () => {
    await expect(buildIso(deep, { rockRidge: false })).rejects.toMatchObject({
      name: "IsoError",
      code: "TOO_DEEP",
      path: "level-1/level-2/level-3/level-4/level-5/level-6/level-7/level-8/level-9/level-10/level-11/level-12/level-13/level-14/level-15/level-16/level-17/level-18/level-19/level-20",
    });
  });
});

describe("content sources", () => {
  it("streams content from factories, checking the declared size", async () => {
    const body = Buffer.alloc(300_000, 7);
    const image = await buildIso(
      [
        {
          type: "file",
          path: "big.bin",
          content: () => Readable.from([body.subarray(0, 1000), body.subarray(1000)]),
          size: body.length,
        },
      ],
      { date: DATE },
    );
    const parsed = inspectBuffer(image);
    expect(readExtents(bufferReader(image), rockRidgeView(parsed.iso).get("big.bin")!).equals(body)).toBe(
      true,
    );
    await expect(
      buildIso([
        { type: "file", path: "short.bin", content: () => Readable.from([Buffer.alloc(10)]), size: 11 },
      ]),
    ).rejects.toMatchObject({ code: "SIZE_MISMATCH", path: "short.bin" });
    await expect(
      buildIso([
        { type: "file", path: "long.bin", content: () => Readable.from([Buffer.alloc(12)]), size: 11 },
      ]),
    ).rejects.toMatchObject({ code: "SIZE_MISMATCH", path: "long.bin" });
  });

  it("writes a directory tree with Rock Ridge off and Joliet on, readable through Joliet names", async () => {
    const src = join(work, "plain-src");
    mkdirSync(join(src, "Mixed Case Dir"), { recursive: true });
    writeFileSync(join(src, "Mixed Case Dir", "a file with a rather long name.yaml"), "k: v\n");
    const path = join(work, "plain.iso");
    await writeIsoFromDirectory(src, path, { rockRidge: false, date: DATE, isoLevel: 1 });
    const image = readFileSync(path);
    const parsed = inspectBuffer(image);
    expect(parsed.rr).toBe(false);
    const joliet = plainView(parsed.joliet!);
    const entry = joliet.get("Mixed Case Dir/a file with a rather long name.yaml")!;
    expect(readExtents(bufferReader(image), entry).toString()).toBe("k: v\n");
    expect([...plainView(parsed.iso).keys()]).toEqual(["MIXED_CA", "MIXED_CA/A_FILE_W.YAM"]);
    const out = join(work, "plain-x");
    mkdirSync(out);
    await run("bsdtar", ["-xf", path, "-C", out]);
    expect(readFileSync(join(out, "Mixed Case Dir", "a file with a rather long name.yaml"), "utf8")).toBe(
      "k: v\n",
    );
  });
});
