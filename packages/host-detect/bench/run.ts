// Probe cost: the QMP probe (one -version run + one -machine none run answering every question) against the
// alternative of parsing help output (-version, -accel help, -object help: three runs, and still no migration
// capabilities), and what the in-memory and on-disk caches save. Rounds are interleaved so machine load hits all alike.
import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { findQemu, probeQemu } from "../src/index.js";
import { clearProbeCache } from "../src/probe.js";

const run = promisify(execFile);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 7);

async function time(fn: () => Promise<unknown>): Promise<number> {
  const start = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - start) / 1e6;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

const { system } = await findQemu("amd64");
const cacheDir = await mkdtemp(path.join(tmpdir(), "host-detect-bench-"));
const samples: Record<string, number[]> = { qmpProbe: [], helpParsing: [], diskCache: [], memoryCache: [] };
try {
  await probeQemu(system, { cacheDir }); // warm the page cache and write the disk cache once
  for (let i = 0; i < ROUNDS; i++) {
    clearProbeCache();
    samples.qmpProbe!.push(await time(() => probeQemu(system)));
    samples.helpParsing!.push(
      await time(() =>
        Promise.all([
          run(system, ["-version"]),
          run(system, ["-accel", "help"]),
          run(system, ["-object", "help"]),
        ]),
      ),
    );
    clearProbeCache();
    samples.diskCache!.push(await time(() => probeQemu(system, { cacheDir })));
    samples.memoryCache!.push(await time(() => probeQemu(system, { cacheDir })));
  }
} finally {
  await rm(cacheDir, { recursive: true, force: true });
}

const base = median(samples.qmpProbe!);
console.log(`${system}, ${ROUNDS} interleaved rounds, median ms (ratio to the QMP probe)`);
for (const [name, values] of Object.entries(samples)) {
  const m = median(values);
  console.log(`${name.padEnd(12)} ${m.toFixed(2).padStart(9)} ms  x${(m / base).toFixed(4)}`);
}
