import { afterEach, describe, expect, it } from "vitest";
import { QmpClient } from "../src/index.js";
import { Channel, LineDecoder, type Runstate } from "../src/protocol/index.js";
import { removeDir, shortTempDir, startQemu } from "./qemu.js";

// The protocol layer alone, against QEMU's monitor: no greeting logic of QmpClient, only what the channel does.
const MACHINE = ["-machine", "none", "-accel", "tcg"];

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

class Reason extends Error {}

function channel() {
  const seen = { messages: [] as unknown[], closes: [] as Reason[], wire: [] as string[] };
  const ch = new Channel<Reason>({
    decoder: new LineDecoder(1 << 20),
    wireLog: (direction, line) => seen.wire.push(`${direction} ${line}`),
    onMessage: (message) => {
      seen.messages.push(message);
    },
    onClose: (reason) => seen.closes.push(reason),
    connectError: (error) => new Reason(`connect ${error.reason} ${error.errno}`),
    closedError: (cause) => new Reason(`peer closed${cause ? `: ${cause.message}` : ""}`),
  });
  return { ch, seen };
}

async function qemu() {
  const dir = await shortTempDir();
  cleanups.push(() => removeDir(dir));
  const started = startQemu(dir, MACHINE);
  cleanups.push(() => started.kill());
  return started;
}

/** Resolves once `ch` has received `n` messages. */
async function received(seen: { messages: unknown[] }, n: number): Promise<void> {
  while (seen.messages.length < n) await new Promise((resolve) => setTimeout(resolve, 5));
}

describe("Channel against QEMU's monitor", () => {
  it("goes idle, connecting, running, disconnecting, idle, and dispatches what arrives", async () => {
    const { qmpPath } = await qemu();
    const { ch, seen } = channel();
    const states: Runstate[] = [ch.runstate];
    await ch.connect(qmpPath, { deadline: Date.now() + 30_000 }, async () => {
      states.push(ch.runstate);
      await received(seen, 1); // the greeting
      ch.send({ execute: "qmp_capabilities", id: 1 });
      await received(seen, 2);
    });
    states.push(ch.runstate);
    expect(seen.messages[0]).toMatchObject({ QMP: { version: { qemu: { major: 7 } } } });
    expect(seen.messages[1]).toEqual({ return: {}, id: 1 });
    ch.send({ execute: "object-add", arguments: { "qom-type": "secret", id: "s0", data: "hunter2" }, id: 2 });
    await received(seen, 3);
    expect(seen.messages[2]).toEqual({ return: {}, id: 2 });
    expect(seen.wire.join("\n")).not.toContain("hunter2");

    const reason = new Reason("done here");
    const disconnecting = ch.disconnect(reason);
    states.push(ch.runstate);
    await disconnecting;
    states.push(ch.runstate);
    expect(states).toEqual(["idle", "connecting", "running", "disconnecting", "idle"]);
    expect(await ch.closed).toBe(reason);
    expect(seen.closes).toEqual([reason]);
    expect(() => ch.send({ execute: "query-status" })).toThrow(reason);
  });

  it("ends idle with the client's error when the socket never appears", async () => {
    const dir = await shortTempDir();
    cleanups.push(() => removeDir(dir));
    const { ch } = channel();
    const error = await ch
      .connect(`${dir}/none.sock`, { deadline: Date.now() + 100 }, async () => undefined)
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(error).toBeInstanceOf(Reason);
    expect((error as Reason).message).toBe("connect timeout ENOENT");
    expect(ch.runstate).toBe("idle");
    expect(await ch.closed).toBe(error);
  });

  it("closes the socket when establishing the session fails, releasing QEMU's monitor", async () => {
    const { qmpPath } = await qemu();
    const { ch, seen } = channel();
    const refused = new Reason("not the greeting we wanted");
    const error = await ch
      .connect(qmpPath, { deadline: Date.now() + 30_000 }, async () => {
        await received(seen, 1);
        throw refused;
      })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(error).toBe(refused);
    expect(ch.runstate).toBe("idle");
    expect(await ch.closed).toBe(refused);
    // QEMU serves one client per monitor: a new client is greeted only because the channel let go.
    const q = await QmpClient.connect(qmpPath, { timeoutMs: 30_000 });
    expect(q.isOpen).toBe(true);
    await q.close();
  });

  it("reports a peer that goes away as the client's closed error, once", async () => {
    const started = await qemu();
    const { ch, seen } = channel();
    await ch.connect(started.qmpPath, { deadline: Date.now() + 30_000 }, () => received(seen, 1));
    started.child.kill("SIGKILL");
    const reason = await ch.closed;
    expect(reason.message).toMatch(/^peer closed/);
    expect(ch.runstate).toBe("idle");
    expect(seen.closes).toEqual([reason]);
  });
});
