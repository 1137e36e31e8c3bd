/**
 * Round trips against a real qemu-ga on this host, all in one run:
 * - guest-ping and a trivial exec (/bin/true) over one persistent connection (how QgaClient is meant to be used),
 * - the same with a new connection + resync per command,
 * - the same with one `socat` process per agent command, as the original shell scripts did;
 * against qemu-ga on the host, then (when the dev image is built) against qemu-ga in a TCG guest over virtio-serial.
 */
import { spawn } from "node:child_process";
import { randomInt } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { encodeJson } from "@stack/qmp/protocol";
import { DelimitedDecoder, isDelimited } from "../src/framing.js";
import { QgaClient } from "../src/index.js";
import { startAgent } from "../test/agent.js";
import { bootDevImage, buildDevImage } from "../test/dev-vm.js";

interface Case {
  name: string;
  /** The persistent-connection case this one is compared with. */
  baseline: string;
  perRound: number;
  /** Runs `n` round trips, timing each; may set up state around them untimed. */
  batch(n: number, time: (fn: () => Promise<unknown>) => Promise<void>): Promise<void>;
  times: number[];
}

const ROUNDS = 10;

/**
 * The cases take turns in rounds, so that load from other processes on this shared machine falls on all of them
 * alike instead of on whichever happened to run during a busy minute.
 */
async function runRounds(cases: Case[]): Promise<void> {
  for (let round = 0; round <= ROUNDS; round++) {
    for (const c of cases) {
      // Round 0 warms up and is not recorded.
      const sink: number[] = round === 0 ? [] : c.times;
      await c.batch(round === 0 ? Math.min(5, c.perRound) : c.perRound, async (fn) => {
        const start = process.hrtime.bigint();
        await fn();
        sink.push(Number(process.hrtime.bigint() - start) / 1e6);
      });
    }
  }
}

function stats(times: number[]): { median: number; p99: number; mean: number } {
  const sorted = [...times].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
  return { median: at(0.5), p99: at(0.99), mean: sorted.reduce((a, b) => a + b, 0) / sorted.length };
}

/** One agent command through its own socat process, resynchronised like QgaClient does. */
function socatCommand(socketPath: string, command: string, args?: object): Promise<unknown> {
  const id = randomInt(1, 2 ** 47);
  const child = spawn("socat", ["-", `UNIX-CONNECT:${socketPath}`], { stdio: ["pipe", "pipe", "ignore"] });
  const decoder = new DelimitedDecoder(64 * 1024 * 1024);
  const exited = new Promise((resolve) => child.once("exit", resolve));
  const reply = new Promise<unknown>((resolve, reject) => {
    let synced = false;
    child.once("error", reject);
    child.stdout.on("data", (chunk: Buffer) => {
      for (const frame of decoder.push(chunk)) {
        if (frame.kind !== "line") continue;
        const message = JSON.parse(frame.text) as { return?: unknown; error?: unknown };
        if (!synced) {
          synced = isDelimited(frame) && message.return === id;
        } else if (message.error) {
          reject(new Error(`${command}: ${JSON.stringify(message.error)}`));
        } else {
          resolve(message.return);
        }
      }
    });
  });
  const sync = encodeJson({ execute: "guest-sync-delimited", arguments: { id } });
  const request = encodeJson(args ? { execute: command, arguments: args } : { execute: command });
  child.stdin.write(Buffer.concat([Buffer.of(0xff), Buffer.from(`${sync}\n${request}\n`)]));
  // socat would linger after its input ends (-t); the agent never hangs up, so stop it once the reply is in.
  return reply.finally(async () => {
    child.kill();
    await exited;
  });
}

async function socatExec(socketPath: string, path: string): Promise<void> {
  const { pid } = (await socatCommand(socketPath, "guest-exec", { path, "capture-output": true })) as {
    pid: number;
  };
  let delay = 1;
  for (;;) {
    const status = (await socatCommand(socketPath, "guest-exec-status", { pid })) as { exited: boolean };
    if (status.exited) return;
    await sleep(delay);
    delay = Math.min(delay * 2, 50);
  }
}

/** The six cases against one agent socket; `scale` shrinks the run counts for a slow (emulated) guest. */
function casesFor(target: string, sock: string, scale: number): Case[] {
  // qemu-ga serves one client at a time, so even the persistent client only holds its connection for its batch.
  const persistent =
    (op: (c: QgaClient) => Promise<unknown>): Case["batch"] =>
    async (n, time) => {
      const client = await QgaClient.connect(sock);
      try {
        for (let i = 0; i < n; i++) await time(() => op(client));
      } finally {
        await client.close();
      }
    };
  const perCommand =
    (op: (c: QgaClient) => Promise<unknown>): Case["batch"] =>
    async (n, time) => {
      for (let i = 0; i < n; i++) {
        await time(async () => {
          const client = await QgaClient.connect(sock);
          try {
            await op(client);
          } finally {
            await client.close();
          }
        });
      }
    };
  const repeat =
    (op: () => Promise<unknown>): Case["batch"] =>
    async (n, time) => {
      for (let i = 0; i < n; i++) await time(op);
    };
  const ping = (c: QgaClient) => c.ping();
  const exec = (c: QgaClient) => c.exec({ path: "/bin/true" });
  const runs = (n: number) => Math.max(1, Math.round(n * scale));
  const PING = `${target}: ping, persistent connection`;
  const EXEC = `${target}: exec /bin/true, persistent connection`;
  return [
    { name: PING, baseline: PING, perRound: runs(100), batch: persistent(ping), times: [] },
    {
      name: `${target}: ping, new connection + resync`,
      baseline: PING,
      perRound: runs(30),
      batch: perCommand(ping),
      times: [],
    },
    {
      name: `${target}: ping, socat process per command`,
      baseline: PING,
      perRound: runs(10),
      batch: repeat(() => socatCommand(sock, "guest-ping")),
      times: [],
    },
    { name: EXEC, baseline: EXEC, perRound: runs(20), batch: persistent(exec), times: [] },
    {
      name: `${target}: exec /bin/true, new connection + resync`,
      baseline: EXEC,
      perRound: runs(10),
      batch: perCommand(exec),
      times: [],
    },
    {
      name: `${target}: exec /bin/true, socat process per command`,
      baseline: EXEC,
      perRound: runs(5),
      batch: repeat(() => socatExec(sock, "/bin/true")),
      times: [],
    },
  ];
}

function report(title: string, cases: Case[]): void {
  console.log(
    `\n${title}, ${ROUNDS} interleaved rounds, ${process.platform}/${process.arch}, node ${process.version}`,
  );
  console.log("| case | runs | median ms | p99 ms | mean ms | median vs persistent |");
  console.log("| --- | --- | --- | --- | --- | --- |");
  for (const c of cases) {
    const s = stats(c.times);
    const base = stats(cases.find((b) => b.name === c.baseline)!.times);
    console.log(
      `| ${c.name} | ${c.times.length} | ${s.median.toFixed(3)} | ${s.p99.toFixed(3)} | ${s.mean.toFixed(3)} | ` +
        `${(s.median / base.median).toFixed(1)}x |`,
    );
  }
}

async function main(): Promise<void> {
  const agent = await startAgent();
  try {
    const cases = casesFor("host qemu-ga", agent.socketPath, 1);
    await runRounds(cases);
    report("qemu-ga -m unix-listen on the host", cases);
  } finally {
    await agent.stop();
  }

  buildDevImage();
  const vm = await bootDevImage();

  try {
    await (await QgaClient.connect(vm.socketPath, { timeoutMs: 300_000 })).close();
    const cases = casesFor("dev VM", vm.socketPath, 0.3);
    await runRounds(cases);
    report("qemu-ga in the dev image (TCG) over virtio-serial", cases);
  } finally {
    await vm.stop();
  }
}

await main();
