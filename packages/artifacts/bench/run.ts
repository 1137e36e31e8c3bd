/**
 * Throughput of download() (SHA-256 while streaming, digest check, fsync, rename) against `curl -o` on the same
 * local server in the same run. Size: BENCH_BYTES (default 1 GiB); rounds: BENCH_ROUNDS (default 3).
 */
import { execFile, spawn } from "node:child_process";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { promisify } from "node:util";
import { download, formatBytes } from "../src/index.js";

const BYTES = Number(process.env.BENCH_BYTES ?? 2 ** 30);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);

// The server runs in its own process so that it does not share an event loop (or a core) with the client.
const SERVER = `
const { createServer } = require("node:http");
const { createHash, randomBytes } = require("node:crypto");
const total = Number(process.argv[1]);
const chunk = randomBytes(1 << 20);
const hash = createHash("sha256");
for (let sent = 0; sent < total; sent += chunk.length) hash.update(chunk.subarray(0, Math.min(chunk.length, total - sent)));
const digest = hash.digest("hex");
const server = createServer((req, res) => {
  res.writeHead(200, { "content-length": String(total), etag: '"bench"' });
  let sent = 0;
  const pump = () => {
    while (sent < total) {
      const piece = chunk.subarray(0, Math.min(chunk.length, total - sent));
      sent += piece.length;
      if (!res.write(piece)) return res.once("drain", pump);
    }
    res.end();
  };
  pump();
});
// Idle connections outlive the pauses between rounds, so no client trips over a connection closed under it.
server.keepAliveTimeout = 600000;
server.listen(0, "127.0.0.1", () => console.log(server.address().port + " " + digest));
`;

async function startServer(): Promise<{ url: string; sha256: string; stop: () => void }> {
  const child = spawn(process.execPath, ["-e", SERVER, String(BYTES)], {
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
  /** CPU seconds (user + system) spent by the client: a figure the machine's other load disturbs less. */
  cpu: number;
}

async function timeOurs(fn: () => Promise<void>): Promise<Sample> {
  const cpu0 = process.cpuUsage();
  const start = process.hrtime.bigint();
  await fn();
  const cpu = process.cpuUsage(cpu0);
  return { wall: Number(process.hrtime.bigint() - start) / 1e9, cpu: (cpu.user + cpu.system) / 1e6 };
}

/** curl under GNU time, which reports the child's CPU time. */
async function timeCurl(url: string, dest: string): Promise<Sample> {
  const { stderr } = await promisify(execFile)("/usr/bin/time", [
    "-f",
    "%e %U %S",
    "curl",
    "-sS",
    "-o",
    dest,
    url,
  ]);
  const [wall, user, sys] = stderr.trim().split(/\s+/).slice(-3).map(Number);
  return { wall: wall!, cpu: user! + sys! };
}

/**
 * Flushes dirty pages before each timed run: curl does not fsync, so without this the run after curl would pay
 * for writing curl's gigabyte to disk while it waits for its own fsync.
 */
async function settle(): Promise<void> {
  await promisify(execFile)("sync");
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function main(): Promise<void> {
  const server = await startServer();
  const dir = await mkdtemp(join(tmpdir(), "artifacts-bench-"));
  const ours: Sample[] = [];
  const curl: Sample[] = [];
  try {
    for (let round = 0; round < ROUNDS; round++) {
      const curlDest = join(dir, "curl.bin");
      const ourDest = join(dir, "ours.bin");
      const runCurl = async () => {
        await settle();
        curl.push(await timeCurl(server.url, curlDest));
        if ((await stat(curlDest)).size !== BYTES) throw new Error("curl fetched the wrong size");
        await rm(curlDest);
      };
      const runOurs = async () => {
        await settle();
        ours.push(
          await timeOurs(async () => {
            const r = await download({
              url: server.url,
              dest: ourDest,
              expectedSha256: server.sha256,
              retries: 0,
            });
            if (!r.verified || r.bytes !== BYTES) throw new Error("download() did not verify");
          }),
        );
        await rm(ourDest);
      };
      // Alternate who goes first so page-cache and CPU-frequency effects do not favour one side.
      if (round % 2 === 0) {
        await runCurl();
        await runOurs();
      } else {
        await runOurs();
        await runCurl();
      }
      console.log(`round ${round + 1}: curl ${describe(curl.at(-1)!)}; download() ${describe(ours.at(-1)!)}`);
    }
  } finally {
    server.stop();
    await rm(dir, { recursive: true, force: true });
  }
  const wallCurl = median(curl.map((s) => s.wall));
  const wallOurs = median(ours.map((s) => s.wall));
  const cpuCurl = median(curl.map((s) => s.cpu));
  const cpuOurs = median(ours.map((s) => s.cpu));
  console.log(
    `\n${formatBytes(BYTES)} from 127.0.0.1, median of ${ROUNDS} rounds (load average ${loadavg()[0]!.toFixed(1)})`,
  );
  console.log(`curl -o                              ${rate(wallCurl)}, ${cpuCurl.toFixed(2)} CPU-s`);
  console.log(`download() hash+verify+fsync+rename  ${rate(wallOurs)}, ${cpuOurs.toFixed(2)} CPU-s`);
  console.log(`throughput ratio download()/curl: ${(wallCurl / wallOurs).toFixed(2)}x (goal >= 0.90x)`);
  console.log(`CPU ratio download()/curl: ${(cpuOurs / cpuCurl).toFixed(2)}x`);
}

function rate(seconds: number): string {
  return `${formatBytes(BYTES / seconds)}/s (${seconds.toFixed(2)} s)`;
}

function describe(s: Sample): string {
  return `${rate(s.wall)}, ${s.cpu.toFixed(2)} CPU-s`;
}

await main();
