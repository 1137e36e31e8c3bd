/**
 * download() against the alternatives, in the same run, on local servers (each a separate Node process):
 *
 * 1. A stand-in for object storage that caps each connection at 8 MiB/s (BENCH_CAP_MIB), 512 MiB
 *    (BENCH_CAPPED_BYTES): download() (SHA-256 while streaming, digest check, fsync, rename) against `curl -o`
 *    (one connection) and `aria2c -x8 -s8`. BENCH_CAPPED_ROUNDS rounds (default 2; curl alone takes a minute).
 * 2. Uncapped loopback, 1 GiB (BENCH_BYTES): download() against `curl -o`. BENCH_ROUNDS rounds (default 3).
 *
 * Who goes first alternates, with a `sync` before each timed run so that nobody pays for another's dirty pages.
 *
 * BENCH_BASELINE=<another build's dist/index.js> adds that build's download() to both, so that a change is
 * measured against what it replaces in the same run (the ratios against curl then come in pairs).
 * BENCH_CAPPED_ROUNDS=0 skips the capped part.
 */
import { execFile, spawn } from "node:child_process";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { pathToFileURL } from "node:url";
import { promisify } from "node:util";
import { download, formatBytes } from "../src/index.js";

const MiB = 1024 * 1024;
const BYTES = Number(process.env.BENCH_BYTES ?? 2 ** 30);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const CAPPED_BYTES = Number(process.env.BENCH_CAPPED_BYTES ?? 512 * MiB);
const CAPPED_ROUNDS = Number(process.env.BENCH_CAPPED_ROUNDS ?? 2);
const CAP = Number(process.env.BENCH_CAP_MIB ?? 8) * MiB;
const BASELINE = process.env.BENCH_BASELINE;
const baseline: typeof download | undefined = BASELINE
  ? (await import(pathToFileURL(BASELINE).href)).download
  : undefined;

// Range requests, an ETag, keep-alive, and (argv[2] > 0) each answer paced to that many bytes per second.
const SERVER = `
const { createServer } = require("node:http");
const { createHash, randomBytes } = require("node:crypto");
const total = Number(process.argv[1]);
const cap = Number(process.argv[2]);
const chunk = randomBytes(1 << 20);
const hash = createHash("sha256");
for (let sent = 0; sent < total; sent += chunk.length) hash.update(chunk.subarray(0, Math.min(chunk.length, total - sent)));
const digest = hash.digest("hex");
const server = createServer((req, res) => {
  const range = /^bytes=(\\d+)-(\\d*)$/.exec(req.headers.range || "");
  let start = 0;
  let end = total;
  const headers = { etag: '"bench"', "accept-ranges": "bytes" };
  if (range) {
    start = Number(range[1]);
    end = range[2] ? Math.min(total, Number(range[2]) + 1) : total;
    if (start >= end) return res.writeHead(416, { ...headers, "content-range": "bytes */" + total }).end();
    res.writeHead(206, { ...headers, "content-length": String(end - start), "content-range": "bytes " + start + "-" + (end - 1) + "/" + total });
  } else {
    res.writeHead(200, { ...headers, "content-length": String(total) });
  }
  const began = Date.now();
  let at = start;
  let timer;
  res.on("close", () => clearTimeout(timer));
  const pump = () => {
    while (at < end) {
      if (cap > 0) {
        const due = began + ((at - start) / cap) * 1000;
        if (due > Date.now()) return (timer = setTimeout(pump, due - Date.now()));
      }
      const offset = at % chunk.length;
      const piece = chunk.subarray(offset, Math.min(chunk.length, offset + end - at, offset + (cap > 0 ? 65536 : chunk.length)));
      at += piece.length;
      if (!res.write(piece)) return res.once("drain", pump);
    }
    res.end();
  };
  pump();
});
server.keepAliveTimeout = 600000;
server.listen(0, "127.0.0.1", () => console.log(server.address().port + " " + digest));
`;

interface Server {
  url: string;
  sha256: string;
  stop: () => void;
}

async function startServer(bytes: number, cap: number): Promise<Server> {
  const child = spawn(process.execPath, ["-e", SERVER, String(bytes), String(cap)], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const line = await new Promise<string>((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`bench server exited with ${code}`)));
    createInterface({ input: child.stdout! }).once("line", resolve);
  });
  const [port, sha256] = line.split(" ");
  return { url: `http://127.0.0.1:${port}/image.bin`, sha256: sha256!, stop: () => child.kill() };
}

interface Sample {
  wall: number;
  /** CPU seconds (user + system) of the client: a figure the machine's other load disturbs less. */
  cpu: number;
  connections?: number;
  /** Peak resident memory above what the process held before, sampled every 20 ms. */
  memory?: number;
}

async function timeOurs(
  url: string,
  dest: string,
  sha256: string,
  bytes: number,
  fn: typeof download = download,
): Promise<Sample> {
  const base = process.memoryUsage().rss;
  let peak = base;
  const sampler = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().rss);
  }, 20);
  const cpu0 = process.cpuUsage();
  const start = process.hrtime.bigint();
  const result = await fn({ url, dest, expectedSha256: sha256, retries: 0 });
  const wall = Number(process.hrtime.bigint() - start) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  clearInterval(sampler);
  if (!result.verified || result.bytes !== bytes) throw new Error("download() did not verify");
  return { wall, cpu: (cpu.user + cpu.system) / 1e6, connections: result.connections, memory: peak - base };
}

/** A command under GNU time, which reports the child's CPU time. */
async function timeCommand(command: string[]): Promise<Sample> {
  const { stderr } = await promisify(execFile)("/usr/bin/time", ["-f", "%e %U %S", ...command]);
  const [wall, user, sys] = stderr.trim().split(/\s+/).slice(-3).map(Number);
  return { wall: wall!, cpu: user! + sys! };
}

/**
 * Flushes dirty pages before each timed run: curl and aria2c do not fsync, so without this the run after them
 * would pay for writing their file to disk while it waits for its own fsync.
 */
async function settle(): Promise<void> {
  await promisify(execFile)("sync");
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

interface Contender {
  name: string;
  run: (dest: string) => Promise<Sample>;
}

/** Runs every contender once per round, rotating who goes first; returns their samples by name. */
async function rounds(
  title: string,
  bytes: number,
  count: number,
  contenders: Contender[],
): Promise<Map<string, Sample[]>> {
  const dir = await mkdtemp(join(tmpdir(), "artifacts-bench-"));
  const samples = new Map(contenders.map((c) => [c.name, [] as Sample[]]));
  try {
    for (let round = 0; round < count; round++) {
      const order = contenders.map((_, i) => contenders[(i + round) % contenders.length]!);
      const parts: string[] = [];
      for (const c of order) {
        const dest = join(dir, `${c.name.replace(/\W+/g, "_")}.bin`);
        await settle();
        const sample = await c.run(dest);
        if ((await stat(dest)).size !== bytes) throw new Error(`${c.name} fetched the wrong size`);
        await rm(dest);
        samples.get(c.name)!.push(sample);
        parts.push(`${c.name} ${describe(sample, bytes)}`);
      }
      console.log(`${title}, round ${round + 1}: ${parts.join("; ")}`);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  return samples;
}

function summary(bytes: number, samples: Sample[]): { wall: number; line: string } {
  const wall = median(samples.map((s) => s.wall));
  const cpu = median(samples.map((s) => s.cpu));
  const connections = samples.map((s) => s.connections).filter((n) => n !== undefined);
  const memory = samples.map((s) => s.memory).filter((n) => n !== undefined);
  const extra = [
    connections.length ? `connections ${connections.join(", ")}` : "",
    memory.length ? `peak memory +${formatBytes(Math.max(...memory))}` : "",
  ].filter(Boolean);
  const line =
    `${rate(bytes, wall).padEnd(24)} ${cpu.toFixed(2).padStart(5)} CPU-s  ${extra.join(", ")}`.trimEnd();
  return { wall, line };
}

/** download(), and the baseline build's when there is one. */
function ours(url: string, sha256: string, bytes: number): Contender[] {
  return [
    { name: "download()", run: (dest) => timeOurs(url, dest, sha256, bytes) },
    ...(baseline
      ? [{ name: "baseline", run: (dest: string) => timeOurs(url, dest, sha256, bytes, baseline) }]
      : []),
  ];
}

/** Each of ours against each yardstick: one line per pair. */
function ratios(results: Map<string, Sample[]>, bytes: number, yardsticks: [string, string][]): void {
  const wall = (name: string) => summary(bytes, results.get(name)!).wall;
  for (const name of ["download()", "baseline"].filter((n) => results.has(n))) {
    console.log(`  ${name.padEnd(28)} ${summary(bytes, results.get(name)!).line}`);
  }
  for (const name of ["download()", "baseline"].filter((n) => results.has(n))) {
    for (const [other, goal] of yardsticks) {
      console.log(
        `  ${`${name}/${other}:`.padEnd(28)} ${(wall(other) / wall(name)).toFixed(2)}x (goal >= ${goal})`,
      );
    }
  }
}

async function capped(): Promise<void> {
  const server = await startServer(CAPPED_BYTES, CAP);
  let results: Map<string, Sample[]>;
  try {
    results = await rounds("capped", CAPPED_BYTES, CAPPED_ROUNDS, [
      ...ours(server.url, server.sha256, CAPPED_BYTES),
      { name: "curl", run: (dest) => timeCommand(["curl", "-sS", "-o", dest, server.url]) },
      {
        name: "aria2c -x8 -s8",
        run: (dest) =>
          timeCommand(
            ["aria2c", "-q", "-x8", "-s8", "--allow-overwrite=true", "--auto-file-renaming=false"].concat([
              "-d",
              join(dest, ".."),
              "-o",
              dest.slice(dest.lastIndexOf("/") + 1),
              server.url,
            ]),
          ),
      },
    ]);
  } finally {
    server.stop();
  }
  console.log(
    `\n${formatBytes(CAPPED_BYTES)}, each connection capped at ${formatBytes(CAP)}/s, median of ${CAPPED_ROUNDS} (load average ${loadavg()[0]!.toFixed(1)})`,
  );
  console.log(`  curl -o (one connection)     ${summary(CAPPED_BYTES, results.get("curl")!).line}`);
  console.log(`  aria2c -x8 -s8               ${summary(CAPPED_BYTES, results.get("aria2c -x8 -s8")!).line}`);
  ratios(results, CAPPED_BYTES, [
    ["curl", "4.00x"],
    ["aria2c -x8 -s8", "0.90x"],
  ]);
}

async function loopback(): Promise<void> {
  const server = await startServer(BYTES, 0);
  let results: Map<string, Sample[]>;
  try {
    results = await rounds("loopback", BYTES, ROUNDS, [
      ...ours(server.url, server.sha256, BYTES),
      { name: "curl", run: (dest) => timeCommand(["curl", "-sS", "-o", dest, server.url]) },
    ]);
  } finally {
    server.stop();
  }
  console.log(
    `\n${formatBytes(BYTES)} from 127.0.0.1, uncapped, median of ${ROUNDS} (load average ${loadavg()[0]!.toFixed(1)})`,
  );
  console.log(`  curl -o                      ${summary(BYTES, results.get("curl")!).line}`);
  ratios(results, BYTES, [["curl", "0.90x"]]);
}

if (CAPPED_ROUNDS > 0) await capped();
await loopback();

function rate(bytes: number, seconds: number): string {
  return `${formatBytes(bytes / seconds)}/s (${seconds.toFixed(2)} s)`;
}

function describe(s: Sample, bytes: number): string {
  return `${rate(bytes, s.wall)}${s.connections ? ` x${s.connections}` : ""}`;
}
