/**
 * Writes the same trees with stack-mkiso (this package's bin, built first), genisoimage and xorriso in one run,
 * each as a whole process with the same flags (-quiet -R -J -V BENCH -o FILE SRC), and prints each writer's
 * wall-time min/median and CPU-time median, and stack-mkiso's ratio to the others, min/median of the wall-time
 * ratios round by round:
 * 1. one 1 GiB file; 2. 20,000 files of 4 KiB in 100 directories; 3. a 3-file cloud-init seed.
 * One unmeasured round first, then BENCH_ROUNDS rounds (default 7; 3 for the 1 GiB file, at least 15 for the
 * 20,000 files, whose ratio is the goal of issue #24, and at least 10 for the seed), the writers' order rotating
 * each round. For the 20,000 files it then says whether stack-mkiso was at least as fast as genisoimage in this
 * run (median of the round-by-round wall-time ratios at most 1.00). Then: the in-process time of a seed image
 * with buildIso, and the peak RSS of a stack-mkiso process writing a 2 GiB image.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  closeSync,
  ftruncateSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildIso } from "../src/index.js";

const packageDir = join(import.meta.dirname, "..");
/** The bin as package.json names it: one bundled file (scripts/bundle-bin.mjs). */
const cli = join(packageDir, "dist", "stack-mkiso.cjs");
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 7);
const work = mkdtempSync(join(tmpdir(), "iso9660-bench-"));
const DATE = new Date("2024-01-01T00:00:00Z");
// SOURCE_DATE_EPOCH: stack-mkiso then writes no clock-dependent byte; the others ignore it.
// NODE_EXTRA_CA_CERTS: node parses that bundle at every start-up (about 40 ms of CPU where it was set when
// this bench was written), a cost of the machine's configuration rather than of writing images.
const { NODE_EXTRA_CA_CERTS, ...inherited } = process.env;
const env = { ...inherited, SOURCE_DATE_EPOCH: String(DATE.getTime() / 1000) };

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

const FLAGS = ["-quiet", "-R", "-J", "-V", "BENCH", "-o"];
const writers: { name: string; command: (src: string, out: string) => [string, string[]] }[] = [
  { name: "stack-mkiso", command: (src, out) => [process.execPath, [cli, ...FLAGS, out, src]] },
  { name: "genisoimage", command: (src, out) => ["genisoimage", [...FLAGS, out, src]] },
  { name: "xorriso", command: (src, out) => ["xorriso", ["-as", "mkisofs", ...FLAGS, out, src]] },
];
const OURS = writers[0]!.name;

/**
 * CPU time (user + system, all threads) of the children this process has waited for, in milliseconds, from
 * /proc (Linux; in clock ticks of 10 ms); null elsewhere. On a busy machine wall times swing with the load,
 * while CPU time says what each writer costs.
 */
function childrenCpuMs(): number | null {
  try {
    const stat = readFileSync("/proc/self/stat", "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[13]) + Number(fields[14])) * 10;
  } catch {
    return null;
  }
}

/** Wall and CPU time of one whole process, in milliseconds. */
function timeProcess(file: string, args: string[]): { wall: number; cpu: number | null } {
  const cpuBefore = childrenCpuMs();
  const start = process.hrtime.bigint();
  const result = spawnSync(file, args, { env, stdio: ["ignore", "ignore", "pipe"] });
  const wall = Number(process.hrtime.bigint() - start) / 1e6;
  if (result.status !== 0) throw new Error(`${file} ${args.join(" ")} failed: ${result.stderr}`);
  const cpuAfter = childrenCpuMs();
  return { wall, cpu: cpuBefore === null || cpuAfter === null ? null : cpuAfter - cpuBefore };
}

const fmt = (ms: number) => `${ms.toFixed(ms < 100 ? 1 : 0)} ms`;

/** Runs the writers on `src`, prints the table, and returns stack-mkiso's wall-time ratio to each writer by round. */
function compare(label: string, src: string, rounds: number): Map<string, number[]> {
  const times = new Map<string, { wall: number; cpu: number | null }[]>(writers.map((w) => [w.name, []]));
  for (let round = -1; round < rounds; round++) {
    // Rotate the order so no writer always runs right after another's page-cache writeback.
    const order = writers.map((_, i) => writers[(i + Math.max(round, 0)) % writers.length]!);
    for (const writer of order) {
      const out = join(work, "out.iso");
      const sample = timeProcess(...writer.command(src, out));
      rmSync(out, { force: true });
      if (round >= 0) times.get(writer.name)!.push(sample);
    }
  }
  const ours = times.get(OURS)!;
  const ratiosTo = new Map<string, number[]>();
  console.log(`\n${label}: whole process, ${rounds} rounds`);
  console.log(
    `  ${"writer".padEnd(12)} ${"wall min".padStart(9)} ${"median".padStart(8)} ${"cpu median".padStart(11)}   ${OURS} / writer (wall), per round`,
  );
  for (const [name, samples] of times) {
    const walls = samples.map((s) => s.wall);
    const cpus = samples.flatMap((s) => (s.cpu === null ? [] : [s.cpu]));
    const cpu = cpus.length === 0 ? "-" : fmt(median(cpus));
    const ratios = walls.map((t, i) => ours[i]!.wall / t);
    ratiosTo.set(name, ratios);
    const ratio =
      name === OURS ? "" : `   min ${Math.min(...ratios).toFixed(2)}x  median ${median(ratios).toFixed(2)}x`;
    console.log(
      `  ${name.padEnd(12)} ${fmt(Math.min(...walls)).padStart(9)} ${fmt(median(walls)).padStart(8)} ${cpu.padStart(11)}${ratio}`,
    );
  }
  return ratiosTo;
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

/**
 * Peak RSS of `node ARGS` in MiB, reported by the process itself at exit through a preloaded script, so the bin
 * runs as users run it (as the main module) and prints nothing else on success.
 */
function peakRssOf(args: string[]): number {
  const preload = join(work, "report-peak-rss.cjs");
  writeFileSync(
    preload,
    'process.on("exit", () => require("node:fs").writeSync(1, JSON.stringify({ maxRssKiB: process.resourceUsage().maxRSS })));\n',
  );
  const stdout = execFileSync(process.execPath, ["--require", preload, ...args], { encoding: "utf8", env });
  return (JSON.parse(stdout) as { maxRssKiB: number }).maxRssKiB / 1024;
}

function peakRss(): void {
  const src = join(work, "two-gib");
  mkdirSync(src);
  const fd = openSync(join(src, "disk.img"), "w");
  ftruncateSync(fd, 2 * 1024 ** 3);
  closeSync(fd);
  const out = join(work, "two-gib.iso");
  const writing = peakRssOf([cli, "-o", out, src]);
  const idle = peakRssOf(["-e", ""]);
  rmSync(out, { force: true });
  console.log(
    `\npeak RSS of stack-mkiso writing a 2 GiB image: ${writing.toFixed(1)} MiB` +
      ` (node doing nothing: ${idle.toFixed(1)} MiB)`,
  );
}

try {
  // The bin is measured as users run it: build it from the current source first, as `pnpm build` does.
  execFileSync(
    process.execPath,
    [createRequire(import.meta.url).resolve("typescript/bin/tsc"), "-p", "tsconfig.build.json"],
    {
      cwd: packageDir,
      stdio: "inherit",
    },
  );
  execFileSync(process.execPath, [join(packageDir, "scripts", "bundle-bin.mjs")], {
    cwd: packageDir,
    stdio: "inherit",
  });
  console.log(`writers: stack-mkiso (node ${process.version}), genisoimage, xorriso -as mkisofs; all -R -J`);
  if (NODE_EXTRA_CA_CERTS !== undefined)
    console.log("NODE_EXTRA_CA_CERTS is left out of the writers' environment");
  const big = join(work, "one-gib");
  makeOneBigFile(big);
  compare("one 1 GiB file", big, Math.min(ROUNDS, 3));
  rmSync(big, { recursive: true });
  const many = join(work, "many");
  makeManySmallFiles(many);
  const manyRatios = compare("20,000 files of 4 KiB in 100 directories", many, Math.max(ROUNDS, 15));
  const goal = median(manyRatios.get("genisoimage")!);
  console.log(
    `  goal of #24, stack-mkiso at least as fast as genisoimage here (median ratio at most 1.00x): ` +
      `${goal.toFixed(2)}x, ${goal <= 1 ? "met" : "not met"} in this run`,
  );
  rmSync(many, { recursive: true });
  const seed = join(work, "seed");
  makeSeed(seed);
  compare("3-file cidata seed", seed, Math.max(ROUNDS, 10));
  await seedInProcess();
  peakRss();
} finally {
  rmSync(work, { recursive: true, force: true });
}
