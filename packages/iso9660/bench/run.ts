/**
 * Writes the same trees with this package, genisoimage and xorriso in one run and prints the ratios:
 * 1. one 1 GiB file; 2. 20,000 files of 4 KiB in 100 directories; 3. a 3-file cloud-init seed.
 * All three writers get Joliet and Rock Ridge, write to a file in the same directory, and run warm (one
 * unmeasured round first). Then: the in-process time of a seed image, and the peak RSS of a child process
 * writing a 2 GiB image.
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, ftruncateSync, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { buildIso, writeIsoFromDirectory } from "../src/index.js";

const run = promisify(execFile);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const work = mkdtempSync(join(tmpdir(), "iso9660-bench-"));
const DATE = new Date("2024-01-01T00:00:00Z");

function median(samples: number[]): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

function makeOneBigFile(dir: string): void {
  mkdirSync(dir);
  const block = randomBytes(1 << 20);
  const fd = openSync(join(dir, "big.bin"), "w");
  for (let i = 0; i < 1024; i++) writeFileSync(fd, block);
  closeSync(fd);
}

function makeManySmallFiles(dir: string): void {
  const block = randomBytes(4096);
  for (let d = 0; d < 100; d++) {
    const sub = join(dir, `dir-${String(d).padStart(3, "0")}`);
    mkdirSync(sub, { recursive: true });
    for (let f = 0; f < 200; f++) writeFileSync(join(sub, `file-${String(f).padStart(3, "0")}.dat`), block);
  }
}

function makeSeed(dir: string): void {
  mkdirSync(dir);
  writeFileSync(join(dir, "user-data"), "#cloud-config\nhostname: bench\nusers:\n  - name: dev\n");
  writeFileSync(join(dir, "meta-data"), "instance-id: iid-bench\nlocal-hostname: bench\n");
  writeFileSync(join(dir, "network-config"), "version: 2\nethernets:\n  eth0:\n    dhcp4: true\n");
}

type Writer = { name: string; write: (src: string, out: string) => Promise<unknown> };

const writers: Writer[] = [
  {
    name: "@stack/iso9660",
    write: (src, out) => writeIsoFromDirectory(src, out, { volumeId: "BENCH", date: DATE }),
  },
  {
    name: "genisoimage",
    write: (src, out) => run("genisoimage", ["-quiet", "-R", "-J", "-V", "BENCH", "-o", out, src]),
  },
  {
    name: "xorriso",
    write: (src, out) =>
      run("xorriso", ["-as", "mkisofs", "-quiet", "-R", "-J", "-V", "BENCH", "-o", out, src]),
  },
];

async function compare(label: string, src: string, rounds: number): Promise<void> {
  const times = new Map<string, number[]>(writers.map((w) => [w.name, []]));
  for (let round = -1; round < rounds; round++) {
    // Rotate the order so no writer always runs right after another's page-cache writeback.
    const order = writers.map((_, i) => writers[(i + Math.max(round, 0)) % writers.length]!);
    for (const writer of order) {
      const out = join(work, "out.iso");
      const start = performance.now();
      await writer.write(src, out);
      const elapsed = performance.now() - start;
      rmSync(out, { force: true });
      if (round >= 0) times.get(writer.name)!.push(elapsed);
    }
  }
  const ours = median(times.get("@stack/iso9660")!);
  console.log(`\n${label} (median of ${rounds})`);
  for (const [name, samples] of times) {
    const m = median(samples);
    const ratio = name === "@stack/iso9660" ? "" : `  ours/${name} = ${(ours / m).toFixed(2)}x`;
    console.log(`  ${name.padEnd(16)} ${m.toFixed(1).padStart(9)} ms${ratio}`);
  }
}

async function seedInProcess(): Promise<void> {
  const entries = [
    { type: "file" as const, path: "user-data", content: "#cloud-config\nhostname: bench\n" },
    { type: "file" as const, path: "meta-data", content: "instance-id: iid-bench\n" },
    { type: "file" as const, path: "network-config", content: "version: 2\n" },
  ];
  for (let i = 0; i < 20; i++) await buildIso(entries, { volumeId: "cidata", date: DATE });
  const samples: number[] = [];
  for (let i = 0; i < 200; i++) {
    const start = performance.now();
    await buildIso(entries, { volumeId: "cidata", date: DATE });
    samples.push(performance.now() - start);
  }
  console.log(`\ncidata image in process with buildIso (median of 200): ${median(samples).toFixed(3)} ms`);
}

async function peakRss(): Promise<void> {
  const src = join(work, "two-gib");
  mkdirSync(src);
  const fd = openSync(join(src, "disk.img"), "w");
  ftruncateSync(fd, 2 * 1024 ** 3);
  closeSync(fd);
  const out = join(work, "two-gib.iso");
  const script = `
    const { writeIsoFromDirectory } = await import(${JSON.stringify(new URL("../src/index.ts", import.meta.url).href)});
    await writeIsoFromDirectory(${JSON.stringify(src)}, ${JSON.stringify(out)}, {});
    console.log(JSON.stringify({ maxRssKiB: process.resourceUsage().maxRSS }));`;
  const baselineScript = "console.log(JSON.stringify({ maxRssKiB: process.resourceUsage().maxRSS }));";
  const node = async (code: string) =>
    JSON.parse(
      (await run(process.execPath, ["--import", "tsx", "--input-type=module", "-e", code])).stdout,
    ) as {
      maxRssKiB: number;
    };
  const writing = await node(script);
  const idle = await node(baselineScript);
  rmSync(out, { force: true });
  console.log(
    `\npeak RSS writing a 2 GiB image: ${(writing.maxRssKiB / 1024).toFixed(1)} MiB` +
      ` (the same node + tsx process doing nothing: ${(idle.maxRssKiB / 1024).toFixed(1)} MiB)`,
  );
}

try {
  console.log(
    `writers: this package (in process), genisoimage and xorriso -as mkisofs (processes), all -R -J`,
  );
  const big = join(work, "one-gib");
  makeOneBigFile(big);
  await compare("one 1 GiB file", big, ROUNDS);
  rmSync(big, { recursive: true });
  const many = join(work, "many");
  makeManySmallFiles(many);
  await compare("20,000 files of 4 KiB in 100 directories", many, ROUNDS);
  rmSync(many, { recursive: true });
  const seed = join(work, "seed");
  makeSeed(seed);
  await compare("3-file cidata seed", seed, Math.max(ROUNDS, 10));
  await seedInProcess();
  await peakRss();
} finally {
  rmSync(work, { recursive: true, force: true });
}
