import { afterEach, describe, expect, it } from "vitest";
import { QmpClient, type QmpError, type QmpEvent } from "../src/index.js";
import { type QemuProcess, rejection, removeDir, shortTempDir, startQemu } from "./qemu.js";

// `-machine none`: a real QMP server without booting anything, cheap enough for a loaded 2-core machine.
const MACHINE = ["-machine", "none", "-accel", "tcg"];

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

async function qemuWithClient(
  opts: Parameters<typeof QmpClient.connect>[1] = {},
): Promise<{ qemu: QemuProcess; q: QmpClient; dir: string }> {
  const dir = await shortTempDir();
  cleanups.push(() => removeDir(dir));
  const qemu = startQemu(dir, MACHINE);
  cleanups.push(() => qemu.kill());
  const q = await QmpClient.connect(qemu.qmpPath, { timeoutMs: 30_000, ...opts });
  cleanups.push(() => q.close());
  return { qemu, q, dir };
}

describe("QmpClient against QEMU 7.2", () => {
  it("waits for the socket to appear, reads the greeting and negotiates", async () => {
    const dir = await shortTempDir();
    cleanups.push(() => removeDir(dir));
    const path = `${dir}/qmp.sock`;
    const connecting = QmpClient.connect(path, { timeoutMs: 30_000 });
    const qemu = startQemu(dir, MACHINE);
    cleanups.push(() => qemu.kill());
    const q = await connecting;
    cleanups.push(() => q.close());
    expect(q.greeting.version.qemu).toMatchObject({ major: 7, minor: 2 });
    expect(q.greeting.capabilities).toContain("oob");
    // Only a negotiated connection may run commands other than qmp_capabilities.
    expect(await q.queryStatus()).toMatchObject({ status: "running", running: true });
    expect((await q.execute<{ qemu: { major: number } }>("query-version")).qemu.major).toBe(7);
  });

  it("times out clearly when the socket never appears or another client holds the monitor", async () => {
    const dir = await shortTempDir();
    cleanups.push(() => removeDir(dir));
    const missing = await rejection(QmpClient.connect(`${dir}/never.sock`, { timeoutMs: 200 }));
    expect(missing.code).toBe("CONNECT_TIMEOUT");
    const { qemu } = await qemuWithClient();
    const second = await rejection(QmpClient.connect(qemu.qmpPath, { timeoutMs: 500 }));
    expect(second.code).toBe("CONNECT_TIMEOUT");
    expect(second.message).toMatch(/another client/);
  });

  it("refuses a socket that does not speak QMP (QEMU's human monitor)", async () => {
    const dir = await shortTempDir();
    cleanups.push(() => removeDir(dir));
    const hmp = `${dir}/hmp.sock`;
    const qemu = startQemu(dir, [...MACHINE, "-monitor", `unix:${hmp},server=on,wait=off`]);
    cleanups.push(() => qemu.kill());
    const error = await rejection(QmpClient.connect(hmp, { timeoutMs: 30_000 }));
    expect(error.code).toBe("PROTOCOL");
    expect(error.message).toMatch(/is it a QMP socket/);
  });

  it("reports QEMU's error classes", async () => {
    const { q } = await qemuWithClient();
    const notFound = await rejection(q.execute("no-such-command"));
    expect(notFound).toMatchObject({
      code: "COMMAND_FAILED",
      errorClass: "CommandNotFound",
      command: "no-such-command",
    });
    const generic = await rejection(q.deviceAdd("no-such-device-model"));
    expect(generic).toMatchObject({ code: "COMMAND_FAILED", errorClass: "GenericError" });
    expect(generic.desc).toMatch(/no-such-device-model/);
    // The connection is still usable after errors.
    expect((await q.queryStatus()).status).toBe("running");
  });

  it("delivers STOP and RESUME events to iterators and waiters", async () => {
    const { q } = await qemuWithClient();
    const all = q.events();
    const stops = q.events("STOP");
    const resumed = q.waitForEvent("RESUME", { timeoutMs: 30_000 });
    await q.stop();
    expect((await q.queryStatus()).running).toBe(false);
    await q.cont();
    expect((await resumed).event).toBe("RESUME");
    expect((await stops.next()).value?.event).toBe("STOP");
    const seen: string[] = [];
    for await (const e of all) {
      seen.push(e.event);
      if (seen.length === 2) break;
    }
    expect(seen).toEqual(["STOP", "RESUME"]);
    await stops.return?.();
    const matching = q.waitForEvent("STOP", { predicate: (e: QmpEvent) => e.timestamp !== undefined });
    await q.stop();
    expect((await matching).timestamp?.seconds).toBeGreaterThan(0);
    const late = await rejection(q.waitForEvent("RESUME", { timeoutMs: 50 }));
    expect(late.code).toBe("TIMEOUT");
  });

  it("matches replies to many commands in flight", async () => {
    const { q } = await qemuWithClient();
    const kinds = ["query-status", "query-version", "query-name", "query-kvm", "no-such-command"] as const;
    const calls = Array.from({ length: 60 }, (_, i) => kinds[(i * 7) % kinds.length]!);
    const results = await Promise.allSettled(calls.map((c) => q.execute<Record<string, unknown>>(c)));
    results.forEach((r, i) => {
      const kind = calls[i];
      if (kind === "no-such-command") {
        expect(r.status).toBe("rejected");
        expect((r as PromiseRejectedResult).reason.errorClass).toBe("CommandNotFound");
        return;
      }
      expect(r.status).toBe("fulfilled");
      const value = (r as PromiseFulfilledResult<Record<string, unknown>>).value;
      if (kind === "query-status") expect(value).toHaveProperty("status");
      if (kind === "query-version") expect(value).toHaveProperty("qemu");
      if (kind === "query-name") expect(value).toEqual({});
      if (kind === "query-kvm") expect(value).toHaveProperty("present");
    });
  });

  it("drops a reply whose command was abandoned and keeps going", async () => {
    const lines: string[] = [];
    const { q } = await qemuWithClient({ wireLog: (dir, line) => lines.push(`${dir} ${line}`) });
    const ac = new AbortController();
    const abandoned = q.execute("query-status", undefined, { signal: ac.signal });
    // Aborted in the same tick the command was written, so its reply can only arrive afterwards.
    ac.abort();
    expect((await rejection(abandoned)).code).toBe("ABORTED");
    const sent = lines.find((l) => l.startsWith("out") && l.includes("query-status"));
    const id = JSON.parse(sent!.slice(4)).id as string;
    // QEMU answers in order: once the next reply is here, the abandoned one has arrived and been dropped.
    expect(await q.execute("query-name")).toEqual({});
    expect(lines.some((l) => l.startsWith("in") && l.includes(`"id":"${id}"`))).toBe(true);
    expect(q.isOpen).toBe(true);
  });

  it("times out a command QEMU cannot answer, then drops its late reply", async () => {
    const { qemu, q } = await qemuWithClient();
    qemu.child.kill("SIGSTOP");
    const stuck = q.queryStatus().then(
      () => undefined,
      (e: QmpError) => e,
    );
    const timedOut = await rejection(q.execute("query-version", undefined, { timeoutMs: 200 }));
    expect(timedOut.code).toBe("TIMEOUT");
    qemu.child.kill("SIGCONT");
    // The command without a short deadline still gets its own answer once QEMU runs again.
    expect(await stuck).toBeUndefined();
    expect(await q.execute("query-name")).toEqual({});
    expect(q.isOpen).toBe(true);
  });

  it("ends the connection with PROTOCOL when QEMU answers with an error without id (an unparseable request)", async () => {
    const { q } = await qemuWithClient();
    const events = q.events();
    const before = q.queryStatus();
    // A lone surrogate is not valid JSON text: QEMU's parser rejects the line, and its error carries no id.
    const broken = q.execute("query-status", { text: "\ud800" });
    const after = q.execute("query-name");
    // QEMU answers in order, so the command before the broken one still gets its own reply.
    expect((await before).status).toBe("running");
    const error = await rejection(broken);
    expect(error).toMatchObject({ code: "PROTOCOL", errorClass: "GenericError", command: "query-status" });
    expect(error.desc).toMatch(/JSON parse error/);
    // Nothing is guessed: the command after it fails too, although QEMU did answer it.
    expect(await rejection(after)).toMatchObject({ code: "PROTOCOL", command: "query-name" });
    const reason = await q.closed;
    expect(reason.code).toBe("PROTOCOL");
    expect(reason.message).toMatch(/error without an id/);
    expect(q.isOpen).toBe(false);
    expect(await events.next()).toEqual({ value: undefined, done: true });
    expect((await rejection(q.queryStatus())).code).toBe("CLOSED");
  });

  it("rejects pending commands with CLOSED when QEMU dies under them", async () => {
    const { qemu, q } = await qemuWithClient();
    const events = q.events();
    // A frozen QEMU cannot answer, so the command is certainly pending when the process is killed.
    qemu.child.kill("SIGSTOP");
    const pending = q.queryStatus();
    qemu.child.kill("SIGKILL");
    const error = await rejection(pending);
    expect(error.code).toBe("CLOSED");
    expect(error.message).toMatch(/query-status/);
    expect((await q.closed).code).toBe("CLOSED");
    expect(await events.next()).toEqual({ value: undefined, done: true });
    expect((await rejection(q.cont())).code).toBe("CLOSED");
  });

  it("fails the connection with PROTOCOL on a message larger than the buffer bound", async () => {
    const { q } = await qemuWithClient({ maxLineBytes: 64 * 1024 });
    const error = await rejection(q.execute("query-qmp-schema"));
    expect(error.code).toBe("PROTOCOL");
    expect(error.message).toMatch(/exceeds 65536 bytes/);
    expect(q.isOpen).toBe(false);
  });

  it("never writes secrets to the wire log", async () => {
    const lines: string[] = [];
    const { q } = await qemuWithClient({ wireLog: (_dir, line) => lines.push(line) });
    await q.execute("object-add", { "qom-type": "secret", id: "sec0", data: "hunter2-top-secret" });
    expect(await q.execute("qom-get", { path: "/objects/sec0", property: "format" })).toBe("raw");
    expect(lines.some((l) => l.includes("object-add"))).toBe(true);
    expect(lines.join("\n")).not.toContain("hunter2");
  });

  it("quits QEMU", async () => {
    const { qemu, q } = await qemuWithClient();
    await q.quit();
    expect(q.isOpen).toBe(false);
    expect(await qemu.exited).toBe(0);
  });
});
