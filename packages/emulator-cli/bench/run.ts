/**
 * Lifecycle benchmark with the offline dev image under this host's accelerator: cold boot, capture, resume with
 * fresh keys, resume without rotation, and quick-boot (stop -> start), each timed as the whole CLI command.
 * Ratios are against the cold boot measured in the same run. BENCH_ARCH=arm64 benchmarks the arm64 dev image,
 * BENCH_IMAGE=<dir> any other image.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const root = resolve(import.meta.dirname, "..", "..", "..");
const cli = join(root, "packages", "emulator-cli", "dist", "stack-emulator.js");
const runs = Number(process.env.BENCH_RUNS ?? 5);
const arch = process.env.BENCH_ARCH ?? "amd64";
const home = mkdtempSync(join(tmpdir(), "se-bench-"));
const imageOut = join(home, "img");

function buildImage(): string {
  const out = execFileSync(
    join(root, "guest", "build-dev-image"),
    ["--arch", arch, "--out", imageOut, "--json"],
    {
      encoding: "utf8",
    },
  );
  return JSON.parse(out.trim().split("\n").pop() as string).path;
}

const env: NodeJS.ProcessEnv = {
  ...process.env,
  STACK_EMULATOR_HOME: home,
  // BENCH_IMAGE=<image dir> benchmarks another image, e.g. guest/build-debian-image's (then set
  // STACK_EMULATOR_BOOT_TIMEOUT=900: its cold boots take minutes under TCG).
  STACK_EMULATOR_IMAGE: process.env.BENCH_IMAGE ?? buildImage(),
  STACK_EMULATOR_DASHBOARD_PORT: "27700",
  STACK_EMULATOR_BACKEND_PORT: "27701",
  EMULATOR_ACCEL: process.env.EMULATOR_ACCEL ?? "tcg",
  CI: "1",
};

// biome-ignore lint/suspicious/noExplicitAny: the CLI's JSON output
function cliJson(args: string[], extra: NodeJS.ProcessEnv = {}): { ms: number; json: any } {
  const started = process.hrtime.bigint();
  const result = spawnSync(process.execPath, [cli, ...args, "--json"], {
    env: { ...env, ...extra },
    encoding: "utf8",
  });
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  if (result.status !== 0) throw new Error(`${args.join(" ")} failed: ${result.stderr}`);
  return { ms, json: JSON.parse(result.stdout) };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] as number;
}

function measure(label: string, times: number, fn: () => number): { label: string; ms: number } {
  const samples: number[] = [];
  for (let i = 0; i < times; i++) samples.push(fn());
  return { label, ms: median(samples) };
}

const reset = () => cliJson(["reset"]);

// A bench that fails midway must not leave VMs on its ports or its home behind.
process.on("exit", () => {
  spawnSync(process.execPath, [cli, "stop", "--all", "--no-save"], { env });
  rmSync(home, { recursive: true, force: true });
});

const cold = measure("cold boot to healthy, fresh keys", Math.min(runs, 3), () => {
  reset();
  const { ms, json } = cliJson(["start"], { EMULATOR_NO_SNAPSHOT: "1" });
  if (json.boot !== "cold") throw new Error(`expected a cold boot, got ${json.boot}`);
  cliJson(["stop", "--no-save"], { STACK_EMULATOR_POWERDOWN_TIMEOUT: "0.1" });
  return ms;
});
const snapshotDir = join(
  home,
  "snapshots",
  JSON.parse(readFileSync(join(env.STACK_EMULATOR_IMAGE as string, "image.json"), "utf8")).name,
);
// Each capture is a cold boot; the figure is the capture itself (stop, save, quit, commit) as the CLI records it.
const capture = measure("capture once healthy (stop, save, quit, commit)", Math.min(runs, 3), () => {
  reset();
  cliJson(["capture"]);
  return JSON.parse(readFileSync(join(snapshotDir, "snapshot.json"), "utf8")).captureMs;
});
const snapshot = JSON.parse(readFileSync(join(snapshotDir, "snapshot.json"), "utf8"));

const resumeRotate = measure("resume to healthy, fresh keys", runs, () => {
  reset();
  const { ms, json } = cliJson(["start"]);
  if (json.boot !== "snapshot" || json.rotation !== "rotated")
    throw new Error(`unexpected start: ${JSON.stringify(json)}`);
  return ms;
});
const resumeNoRotation = measure("resume to healthy, no rotation", runs, () => {
  reset();
  return cliJson(["start"], { EMULATOR_NO_ROTATION: "1" }).ms;
});
const stopMs: number[] = [];
/** How the last stop saved the guest: x-ignore-shared (device state only) or a whole-RAM stream. */
const savedWith = () =>
  JSON.parse(readFileSync(join(home, "instances", "default", "suspend", "suspend.json"), "utf8"))
    .method as string;
let lastMethod = "";
const stopThenStart = () => {
  stopMs.push(cliJson(["stop"]).ms);
  lastMethod = savedWith();
  const { ms, json } = cliJson(["start"]);
  if (json.boot !== "quick-boot") throw new Error(`expected quick-boot, got ${json.boot}`);
  return ms;
};
// The first stop after a snapshot resume, apart from the later ones: where the instance keeps its RAM in a file of
// its own, only the cold-boot path differs there; with anonymous RAM every stop writes the stream.
const firstStops: number[] = [];
let firstMethod = "";
const firstQuickBoot = measure("first stop -> start after a snapshot resume", Math.min(runs, 3), () => {
  reset();
  cliJson(["start"]);
  const ms = stopThenStart();
  firstMethod = lastMethod;
  firstStops.push(stopMs.pop() as number);
  return ms;
});
const quickBoot = measure("stop (save) -> start (quick-boot) to healthy", runs, stopThenStart);
const laterMethod = lastMethod;
reset();

/** Proportional set size of a process: its private memory plus its share of pages mapped by others too. */
function pssKiB(pid: number): number {
  const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
  return Number(/^Pss:\s+(\d+) kB/m.exec(rollup)?.[1]);
}
function rssKiB(pid: number): number {
  return Number(/^Rss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"))?.[1]);
}
// Several instances resumed from one snapshot map the same RAM file copy-on-write: the pages none of them wrote are
// in memory once. Extra instances get free ports of their own.
const { STACK_EMULATOR_DASHBOARD_PORT: _d, STACK_EMULATOR_BACKEND_PORT: _b, ...autoPortEnv } = env;
const instanceNames = ["default", "bench-b", "bench-c"];
const pids = instanceNames.map((name) => {
  const result = spawnSync(
    process.execPath,
    [cli, "start", "--json", "--instance", name, "--ports", "auto"],
    {
      env: name === "default" ? env : autoPortEnv,
      encoding: "utf8",
    },
  );
  if (result.status !== 0) throw new Error(`start --instance ${name} failed: ${result.stderr}`);
  return JSON.parse(result.stdout).qemu.pid as number;
});
const memory = pids.map((pid) => ({ pss: pssKiB(pid), rss: rssKiB(pid) }));
spawnSync(process.execPath, [cli, "stop", "--all", "--no-save"], { env: autoPortEnv });

const du = (...flags: string[]) =>
  Number(execFileSync("du", [...flags, snapshotDir], { encoding: "utf8" }).split("\t")[0]);
const rows = [
  [cold.label, cold.ms, 1],
  [resumeRotate.label, resumeRotate.ms, resumeRotate.ms / cold.ms],
  [resumeNoRotation.label, resumeNoRotation.ms, resumeNoRotation.ms / cold.ms],
  [firstQuickBoot.label, firstQuickBoot.ms, firstQuickBoot.ms / cold.ms],
  [`first stop after a snapshot resume (${firstMethod})`, median(firstStops), median(firstStops) / cold.ms],
  [quickBoot.label, quickBoot.ms, quickBoot.ms / cold.ms],
  [`stop, saving the running state (${laterMethod})`, median(stopMs), median(stopMs) / cold.ms],
  [capture.label, capture.ms, capture.ms / cold.ms],
] as const;

console.log(
  `\nemulator lifecycle, ${process.env.BENCH_IMAGE ?? `${arch} dev image`}, accel ${env.EMULATOR_ACCEL}, median of ${runs} (cold boot and capture: ${Math.min(runs, 3)}), whole CLI command (capture: as recorded by the CLI)\n`,
);
console.log("| what | time | vs cold boot |");
console.log("| --- | ---: | ---: |");
for (const [label, ms, ratio] of rows)
  console.log(`| ${label} | ${(ms / 1000).toFixed(3)} s | ${ratio.toFixed(3)}x |`);
console.log(
  `\nsnapshot on disk: ${(du("-sk") / 1024).toFixed(1)} MiB allocated (${(du("-sk", "--apparent-size") / 1024).toFixed(1)} MiB apparent); device state ${(snapshot.stateBytes / 1024).toFixed(0)} KiB`,
);
console.log("\n| instance resumed from the one snapshot | PSS | RSS | PSS vs the first instance's RSS |");
console.log("| --- | ---: | ---: | ---: |");
memory.forEach(({ pss, rss }, i) => {
  const first = memory[0]?.rss ?? 1;
  console.log(
    `| ${instanceNames[i]} | ${(pss / 1024).toFixed(1)} MiB | ${(rss / 1024).toFixed(1)} MiB | ${(pss / first).toFixed(3)}x |`,
  );
});
