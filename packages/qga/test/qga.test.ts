import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { createConnection, createServer, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { QgaClient, QgaError } from "../src/index.js";
import { type Agent, spawnAgent, startAgent } from "./agent.js";

async function rejection(promise: Promise<unknown>): Promise<QgaError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(QgaError);
  return error as QgaError;
}

/** Writes bytes on a fresh raw connection, then waits for the first reply line (or none) and disconnects. */
async function rawExchange(socketPath: string, bytes: string, waitForReply: boolean): Promise<string> {
  const socket: Socket = createConnection(socketPath);
  let received = "";
  await new Promise<void>((resolve, reject) => {
    socket.on("error", reject);
    socket.on("data", (chunk: Buffer) => {
      received += chunk.toString("latin1");
      if (received.includes("\n")) socket.end();
    });
    socket.on("close", () => resolve());
    socket.write(bytes, () => {
      if (!waitForReply) socket.end();
    });
  });
  return received.split("\n")[0] ?? "";
}

describe("QgaClient against a real qemu-ga", () => {
  let agent: Agent;
  let client: QgaClient;
  const wire: string[] = [];

  beforeAll(async () => {
    agent = await startAgent();
    client = await QgaClient.connect(agent.socketPath, {
      wireLog: (direction, line) => wire.push(`${direction} ${line}`),
    });
  });

  afterAll(async () => {
    await client?.close();
    await agent?.stop();
  });

  it("resyncs on connect with 0xFF and guest-sync-delimited, then pings", async () => {
    expect(wire[0]).toMatch(/^out \\xff\{"execute":"guest-sync-delimited","arguments":\{"id":\d+\}\}$/);
    await expect(client.ping()).resolves.toBeUndefined();
  });

  it("reports the agent version and its commands", async () => {
    const info = await client.info();
    expect(info.version).toMatch(/^\d+\.\d+\.\d+/);
    expect(info.supported_command).toContainEqual(
      expect.objectContaining({ name: "guest-exec", enabled: true }),
    );
    await expect(client.supports("guest-exec-status")).resolves.toBe(true);
    await expect(client.supports("guest-no-such-command")).resolves.toBe(false);
  });

  it("runs a process with stdin and returns its output and exit code, never logging stdin", async () => {
    wire.length = 0;
    const secret = "STACK_SECRET_SERVER_KEY=0123456789abcdef\n";
    const result = await client.exec({
      path: "/bin/sh",
      args: ["-c", "cat; echo err >&2; exit 3"],
      stdin: secret,
    });
    expect(result).toEqual({
      exitCode: 3,
      stdout: Buffer.from(secret),
      stderr: Buffer.from("err\n"),
      stdoutTruncated: false,
      stderrTruncated: false,
    });
    const log = wire.join("\n");
    expect(log).toContain('"input-data":"[redacted: ');
    expect(log).not.toContain("0123456789abcdef");
    expect(log).not.toContain(Buffer.from(secret).toString("base64"));
    // qemu-ga 7.2 takes capture-output only as a boolean.
    expect(log).toContain('"capture-output":true');
  });

  it("keeps file contents out of the wire log too (guest-file-write)", async () => {
    wire.length = 0;
    const secret = "CRON_SECRET=fedcba9876543210\n";
    const path = `${agent.dir}/written`;
    const handle = await client.execute<number>("guest-file-open", { path, mode: "w" });
    await client.execute("guest-file-write", { handle, "buf-b64": Buffer.from(secret).toString("base64") });
    await client.execute("guest-file-close", { handle });
    expect(readFileSync(path, "utf8")).toBe(secret);
    expect(wire.join("\n")).toContain('"buf-b64":"[redacted: ');
    expect(wire.join("\n")).not.toContain(Buffer.from(secret).toString("base64"));
  });

  it("returns exit code 0 and empty output for /bin/true", async () => {
    const result = await client.exec({ path: "/bin/true" });
    expect(result.exitCode).toBe(0);
    expect(result.signal).toBeUndefined();
    expect(result.stdout.length + result.stderr.length).toBe(0);
  });

  it("reports the signal that killed a process, with no exit code", async () => {
    const result = await client.exec({ path: "/bin/sh", args: ["-c", "kill -TERM $$"] });
    expect(result.signal).toBe(15);
    expect(result.exitCode).toBeUndefined();
  });

  it("passes a large stdin through intact", async () => {
    const input = randomBytes(3 * 1024 * 1024 + 7);
    const result = await client.exec({ path: "/usr/bin/sha256sum", stdin: input });
    expect(result.stdout.toString().split(" ")[0]).toBe(createHash("sha256").update(input).digest("hex"));
  });

  it("truncates output over 16 MiB and says so", { timeout: 180_000 }, async () => {
    const result = await client.exec(
      { path: "/bin/sh", args: ["-c", "head -c 20M /dev/zero"] },
      { timeoutMs: 150_000 },
    );
    expect(result.exitCode).toBe(0);
    expect(result.stdoutTruncated).toBe(true);
    expect(result.stderrTruncated).toBe(false);
    expect(result.stdout.length).toBe(16 * 1024 * 1024);
    expect(result.stdout.every((byte) => byte === 0)).toBe(true);
  });

  it("replaces the whole environment with env", async () => {
    const result = await client.exec({ path: "/usr/bin/env", env: ["FOO=bar", "EMPTY="] });
    expect(result.stdout.toString()).toBe("FOO=bar\nEMPTY=\n");
  });

  it("returns no output when captureOutput is false", async () => {
    wire.length = 0;
    const result = await client.exec({ path: "/bin/sh", args: ["-c", "echo hidden"], captureOutput: false });
    expect(result.exitCode).toBe(0);
    expect(result.stdout.length).toBe(0);
    expect(wire.join("\n")).toContain('"capture-output":false');
  });

  it("keeps concurrent commands' replies apart", async () => {
    const results = await Promise.all(
      Array.from({ length: 6 }, (_, i) => client.exec({ path: "/bin/echo", args: [`job-${i}`] })),
    );
    expect(results.map((r) => r.stdout.toString())).toEqual(
      Array.from({ length: 6 }, (_, i) => `job-${i}\n`),
    );
  });

  it("spawns a process, serves other commands while it runs, then collects its result once", async () => {
    const pid = await client.spawn({
      path: "/bin/sh",
      args: ["-c", 'read -r line; echo "got $line"'],
      stdin: "x\n",
    });
    expect(pid).toBeGreaterThan(0);
    await expect(client.ping()).resolves.toBeUndefined();
    const result = await client.waitForExit(pid);
    expect(result.exitCode).toBe(0);
    expect(result.stdout.toString()).toBe("got x\n");
    // The agent forgot the process when it reported its exit.
    const again = await rejection(client.waitForExit(pid));
    expect(again.code).toBe("COMMAND_FAILED");
  });

  it("fails a command the agent rejects with COMMAND_FAILED and the agent's error", async () => {
    const error = await rejection(client.exec({ path: "/nonexistent/program" }));
    expect(error.code).toBe("COMMAND_FAILED");
    expect(error.errorClass).toBe("GenericError");
    expect(error.command).toBe("guest-exec");
    expect(error.message).toContain(error.desc);
    // The channel is still usable afterwards.
    await expect(client.ping()).resolves.toBeUndefined();
  });

  it("maps an unknown command to UNSUPPORTED", async () => {
    const error = await rejection(client.execute("guest-no-such-command"));
    expect(error.code).toBe("UNSUPPORTED");
    expect(error.errorClass).toBe("CommandNotFound");
  });

  it("times out an exec that outlives its deadline, then runs the next command", async () => {
    const error = await rejection(client.exec({ path: "/bin/sleep", args: ["30"] }, { timeoutMs: 300 }));
    expect(error.code).toBe("TIMEOUT");
    expect(error.message).toContain("may still be running");
    const next = await client.exec({ path: "/bin/echo", args: ["after"] });
    expect(next.stdout.toString()).toBe("after\n");
  });

  it("sends set-time as integer nanoseconds (an out-of-range time, so the host clock is never touched)", async () => {
    wire.length = 0;
    // 1900 is outside the 1970-2069 range qemu-ga accepts; it checks before calling settimeofday.
    const error = await rejection(client.setTime(new Date("1900-01-01T00:00:00Z")));
    expect(error.code).toBe("COMMAND_FAILED");
    expect(error.desc).toBe("Invalid time");
    expect(wire).toContain('out {"execute":"guest-set-time","arguments":{"time":-2208988800000000000}}');
    const fromBigint = await rejection(client.setTime(-2208988800000000001n));
    expect(fromBigint.desc).toBe("Invalid time");
    expect(wire).toContain('out {"execute":"guest-set-time","arguments":{"time":-2208988800000000001}}');
  });

  it("refuses set-time arguments that cannot be encoded, without sending them", async () => {
    wire.length = 0;
    await expect(client.setTime(2n ** 63n)).rejects.toThrow(RangeError);
    await expect(client.setTime(new Date(Number.NaN))).rejects.toThrow(RangeError);
    expect(wire).toEqual([]);
  });
});

describe("resync", () => {
  let agent: Agent;

  beforeAll(async () => {
    agent = await startAgent();
  });

  afterAll(async () => {
    await agent?.stop();
  });

  it("cleans up a previous client's half-written command left in the agent", async () => {
    const partial = '{"execute":"guest-exec","arguments":{"path":"/bin/echo","arg":["x';
    // Without a resync the leftover corrupts the next command: the agent answers a ping with a parse error.
    await rawExchange(agent.socketPath, partial, false);
    const naive = await rawExchange(agent.socketPath, '{"execute":"guest-ping"}\n', true);
    expect(naive).toContain('"error"');

    await rawExchange(agent.socketPath, partial, false);
    const client = await QgaClient.connect(agent.socketPath);
    try {
      await expect(client.ping()).resolves.toBeUndefined();
      const result = await client.exec({ path: "/bin/echo", args: ["clean"] });
      expect(result.stdout.toString()).toBe("clean\n");
    } finally {
      await client.close();
    }
  });

  it("discards the late reply of a command that timed out before running the next one", async () => {
    const wire: string[] = [];
    const client = await QgaClient.connect(agent.socketPath, { wireLog: (d, l) => wire.push(`${d} ${l}`) });
    try {
      agent.pause();
      const error = await rejection(client.info({ timeoutMs: 300 }));
      expect(error.code).toBe("TIMEOUT");
      // Still paused: the resync before the next command finds nobody answering.
      const unresponsive = await rejection(client.ping({ timeoutMs: 300 }));
      expect(unresponsive.code).toBe("AGENT_UNRESPONSIVE");
      agent.resume();
      // The resumed agent now answers guest-info and the abandoned sync; neither may be taken for guest-exec's reply.
      const result = await client.exec({ path: "/bin/echo", args: ["fresh"] });
      expect(result.stdout.toString()).toBe("fresh\n");
      const syncs = wire.filter((line) => line.startsWith('out \\xff{"execute":"guest-sync-delimited"'));
      expect(syncs).toHaveLength(3);
      expect(wire.filter((line) => line.startsWith('in {"return":{"version"'))).toHaveLength(1);
    } finally {
      agent.resume();
      await client.close();
    }
  });

  it("waits for the socket to appear", async () => {
    let late: Agent | undefined;
    const dir = agent.dir;
    const connecting = QgaClient.connect(`${dir}/late/s`, { timeoutMs: 30_000 });
    try {
      late = await spawnAgent();
      // The client was pointed at a path that does not exist yet; make it appear by linking the real socket.
      await late.ready;
      execFileSync("mkdir", ["-p", `${dir}/late`]);
      execFileSync("ln", ["-s", late.socketPath, `${dir}/late/s`]);
      const client = await connecting;
      await expect(client.ping()).resolves.toBeUndefined();
      await client.close();
    } finally {
      await connecting.then(
        () => undefined,
        () => undefined,
      );
      await late?.stop();
    }
  });
});

describe("failures", () => {
  it("reports AGENT_UNRESPONSIVE when nothing answers the sync", async () => {
    const received: Buffer[] = [];
    const sockets = new Set<Socket>();
    const server = createServer((socket) => {
      sockets.add(socket);
      socket.on("data", (chunk: Buffer) => received.push(chunk));
    });
    const dir = execFileSync("mktemp", ["-d", "/tmp/qga-XXXXXX"]).toString().trim();
    const socketPath = `${dir}/s`;
    await new Promise<void>((resolve) => server.listen(socketPath, resolve));
    try {
      const error = await rejection(QgaClient.connect(socketPath, { timeoutMs: 500 }));
      expect(error.code).toBe("AGENT_UNRESPONSIVE");
      const bytes = Buffer.concat(received);
      expect(bytes[0]).toBe(0xff);
      expect(bytes.subarray(1).toString()).toMatch(
        /^\{"execute":"guest-sync-delimited","arguments":\{"id":\d+\}\}\n$/,
      );
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
      execFileSync("rm", ["-rf", dir]);
    }
  });

  it("reports AGENT_UNRESPONSIVE when the socket never appears", async () => {
    const error = await rejection(QgaClient.connect("/tmp/qga-missing-dir/none", { timeoutMs: 200 }));
    expect(error.code).toBe("AGENT_UNRESPONSIVE");
    expect(error.message).toContain("ENOENT");
  });

  it("reports UNSUPPORTED for a command disabled in the agent", async () => {
    const agent = await startAgent({ blockRpcs: ["guest-exec"] });
    try {
      const client = await QgaClient.connect(agent.socketPath);
      try {
        await expect(client.supports("guest-exec")).resolves.toBe(false);
        const error = await rejection(client.exec({ path: "/bin/true" }));
        expect(error.code).toBe("UNSUPPORTED");
        expect(error.command).toBe("guest-exec");
      } finally {
        await client.close();
      }
    } finally {
      await agent.stop();
    }
  });

  it("fails a reply over maxLineBytes and keeps the channel usable", async () => {
    const agent = await startAgent();
    try {
      const client = await QgaClient.connect(agent.socketPath, { maxLineBytes: 1024 * 1024 });
      try {
        const error = await rejection(client.exec({ path: "/bin/sh", args: ["-c", "head -c 2M /dev/zero"] }));
        expect(error.code).toBe("COMMAND_FAILED");
        expect(error.message).toContain("maxLineBytes");
        const next = await client.exec({ path: "/bin/echo", args: ["ok"] });
        expect(next.stdout.toString()).toBe("ok\n");
      } finally {
        await client.close();
      }
    } finally {
      await agent.stop();
    }
  });

  it("rejects a pending command with CLOSED when the agent goes away, and later calls too", async () => {
    const agent = await startAgent();
    try {
      const client = await QgaClient.connect(agent.socketPath);
      agent.pause();
      const pending = rejection(client.ping());
      await agent.stop("SIGKILL");
      expect((await pending).code).toBe("CLOSED");
      expect((await rejection(client.ping())).code).toBe("CLOSED");
      await client.close();
    } finally {
      await agent.stop();
    }
  });

  it("rejects calls after close with CLOSED", async () => {
    const agent = await startAgent();
    try {
      const client = await QgaClient.connect(agent.socketPath);
      await client.close();
      expect((await rejection(client.ping())).code).toBe("CLOSED");
    } finally {
      await agent.stop();
    }
  });
});
