/**
 * 1. Round trip of `query-status` over one persistent QmpClient connection, against what the original did: one
 *    `printf ... | socat - UNIX-CONNECT:sock` process per command, negotiating each time (with and without the
 *    original's `sleep 0.5` that kept socat's stdin open), all against the same QEMU in the same run.
 * 2. Save and restore of a 256 MiB guest with each method this QEMU supports.
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import {
  chooseSaveMethod,
  memoryBackendArgs,
  QmpClient,
  restoreVmState,
  type SaveMethod,
  saveVmState,
} from "../src/index.js";
import { removeDir, shortTempDir, startQemu } from "../test/qemu.js";

const PERSISTENT_ROUNDS = Number(process.env.BENCH_QMP_ROUNDS ?? 2000);
const SOCAT_ROUNDS = Number(process.env.BENCH_SOCAT_ROUNDS ?? 100);
const SOCAT_SLEEP_ROUNDS = Number(process.env.BENCH_SOCAT_SLEEP_ROUNDS ?? 10);
const GUEST_MIB = 256;
/** Guest RAM filled with random bytes, so the exec stream carries real pages rather than zero-page markers. */
const USED_MIB = 128;
const SAVE_ROUNDS = Number(process.env.BENCH_SAVE_ROUNDS ?? 3);

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

interface Summary {
  median: number;
  p99: number;
  n: number;
}

function summarize(samples: number[]): Summary {
  const sorted = [...samples].sort((a, b) => a - b);
  return { median: quantile(sorted, 0.5), p99: quantile(sorted, 0.99), n: sorted.length };
}

function fmt(ms: number): string {
  return ms < 10 ? `${ms.toFixed(3)} ms` : `${ms.toFixed(1)} ms`;
}

function socatOnce(sock: string, sleep: boolean): Promise<number> {
  const commands = `printf '%s\\n' '{"execute":"qmp_capabilities"}' '{"execute":"query-status"}'`;
  const script = sleep
    ? `( ${commands}; sleep 0.5 ) | socat -t30 - UNIX-CONNECT:${sock}`
    : `${commands} | socat - UNIX-CONNECT:${sock}`;
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn("sh", ["-c", script], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout.setEncoding("utf8").on("data", (s: string) => {
      out += s;
    });
    child.on("error", reject);
    child.on("exit", () => {
      const elapsed = performance.now() - started;
      // Without the sleep socat may hang up before QEMU answers; such a run did not do the job, so it is a failure.
      if (out.includes('"status"')) resolve(elapsed);
      else reject(new Error(`socat got no query-status reply: ${JSON.stringify(out)}`));
    });
  });
}

async function roundTrips(dir: string): Promise<void> {
  const socatSock = path.join(dir, "socat.sock");
  const qemu = startQemu(dir, [
    "-machine",
    "none",
    "-accel",
    "tcg",
    "-qmp",
    `unix:${socatSock},server=on,wait=off`,
  ]);
  try {
    const q = await QmpClient.connect(qemu.qmpPath, { timeoutMs: 30_000 });
    for (let i = 0; i < 100; i++) await q.queryStatus();
    const persistent: number[] = [];
    for (let i = 0; i < PERSISTENT_ROUNDS; i++) {
      const t = performance.now();
      await q.queryStatus();
      persistent.push(performance.now() - t);
    }
    const socat: number[] = [];
    let socatFailures = 0;
    for (let i = 0; i < SOCAT_ROUNDS; i++) {
      try {
        socat.push(await socatOnce(socatSock, false));
      } catch {
        socatFailures++;
      }
    }
    const socatSleep: number[] = [];
    for (let i = 0; i < SOCAT_SLEEP_ROUNDS; i++) socatSleep.push(await socatOnce(socatSock, true));
    await q.quit();

    const p = summarize(persistent);
    const s = summarize(socat);
    const ss = summarize(socatSleep);
    console.log("## query-status round trip");
    console.log("| client | runs | median | p99 | median ratio vs persistent |");
    console.log("| --- | --- | --- | --- | --- |");
    console.log(`| QmpClient, one persistent connection | ${p.n} | ${fmt(p.median)} | ${fmt(p.p99)} | 1x |`);
    console.log(
      `| socat per command, no sleep | ${s.n} (+${socatFailures} without a reply) | ${fmt(s.median)} | ${fmt(s.p99)} | ${(s.median / p.median).toFixed(0)}x |`,
    );
    console.log(
      `| socat per command, original \`sleep 0.5\` | ${ss.n} | ${fmt(ss.median)} | ${fmt(ss.p99)} | ${(ss.median / p.median).toFixed(0)}x |`,
    );
  } finally {
    await qemu.kill();
  }
}

function* randomMiB(mib: number): Generator<Buffer> {
  for (let i = 0; i < mib; i++) yield randomBytes(1024 * 1024);
}

interface SaveRestoreSample {
  saveMs: number;
  bytes: number;
  restoreMs: number;
  spawnToPausedMs: number;
}

async function saveRestoreOnce(
  dir: string,
  method: SaveMethod,
  blob: string,
  round: number,
): Promise<SaveRestoreSample> {
  const shared = method === "x-ignore-shared";
  const ram = (share: boolean) =>
    shared
      ? memoryBackendArgs({ id: "mem0", path: path.join(dir, `ram-${round}`), sizeMiB: GUEST_MIB, share })
      : [];
  const machine = ["-machine", "pc", "-accel", "tcg", "-m", String(GUEST_MIB)];
  const source = startQemu(
    dir,
    [...machine, ...ram(true), "-device", `loader,file=${blob},addr=0x1000000,force-raw=on`],
    `src${round}`,
  );
  const statePath = path.join(dir, `state-${method}-${round}`);
  try {
    const q = await QmpClient.connect(source.qmpPath, { timeoutMs: 60_000 });
    if (shared && (await chooseSaveMethod(q, { sharedMemoryBackend: true })) !== "x-ignore-shared") {
      throw new Error("chooseSaveMethod should pick x-ignore-shared for a guest with a shared RAM file");
    }
    const saved = await saveVmState(q, { method, path: statePath });
    await q.quit();
    await source.exited;

    const started = performance.now();
    const target = startQemu(dir, [...machine, ...ram(false), "-S", "-incoming", "defer"], `dst${round}`);
    try {
      const t = await QmpClient.connect(target.qmpPath, { timeoutMs: 60_000 });
      const restoreStart = performance.now();
      await restoreVmState(t, { method, path: statePath });
      const done = performance.now();
      await t.quit();
      return {
        saveMs: saved.durationMs,
        bytes: saved.bytes,
        restoreMs: done - restoreStart,
        spawnToPausedMs: done - started,
      };
    } finally {
      await target.kill();
    }
  } finally {
    await source.kill();
    await removeDir(statePath);
    await removeDir(path.join(dir, `ram-${round}`));
  }
}

async function saveRestore(dir: string): Promise<void> {
  const blob = path.join(dir, "blob.bin");
  await writeFile(blob, randomMiB(USED_MIB));
  const methods: SaveMethod[] = ["exec", "x-ignore-shared"];
  const rows: string[] = [];
  const medians = new Map<SaveMethod, { save: number; restore: number }>();
  for (const method of methods) {
    const samples: SaveRestoreSample[] = [];
    for (let i = 0; i < SAVE_ROUNDS; i++) samples.push(await saveRestoreOnce(dir, method, blob, i));
    const save = summarize(samples.map((s) => s.saveMs)).median;
    const restore = summarize(samples.map((s) => s.restoreMs)).median;
    const spawn = summarize(samples.map((s) => s.spawnToPausedMs)).median;
    const mib = summarize(samples.map((s) => s.bytes)).median / (1024 * 1024);
    medians.set(method, { save, restore });
    rows.push(
      `| ${method} | ${SAVE_ROUNDS} | ${mib.toFixed(1)} MiB | ${fmt(save)} | ${fmt(restore)} | ${fmt(spawn)} |`,
    );
  }
  console.log(`\n## save/restore, ${GUEST_MIB} MiB guest with ${USED_MIB} MiB of random data (medians)`);
  console.log(
    "| method | runs | state file | save | restore (migrate-incoming to paused) | QEMU spawn to paused |",
  );
  console.log("| --- | --- | --- | --- | --- | --- |");
  for (const row of rows) console.log(row);
  const exec = medians.get("exec")!;
  const shared = medians.get("x-ignore-shared")!;
  console.log(
    `\nx-ignore-shared vs exec: save ${(exec.save / shared.save).toFixed(1)}x faster, restore ${(exec.restore / shared.restore).toFixed(1)}x faster`,
  );
}

const dir = await shortTempDir();
try {
  await roundTrips(dir);
  await saveRestore(dir);
} finally {
  await removeDir(dir);
}
