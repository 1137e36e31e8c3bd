import { createConnection } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { QgaClient } from "../src/index.js";
import { bootDevImage, buildDevImage, type DevVm } from "./dev-vm.js";

/**
 * The same client over a real virtio-serial port to the dev image's qemu-ga. Unlike `-m unix-listen`, the channel
 * has no connection semantics: a reply a previous client never read is delivered to the next one. Setting the
 * clock is safe here, it is the guest's.
 */
const BOOT_TIMEOUT_MS = 240_000;

/** Writes bytes on a raw connection and hangs up without reading anything. */
async function raw(socketPath: string, bytes: string): Promise<void> {
  const socket = createConnection(socketPath);
  await new Promise<void>((resolve, reject) => {
    socket.on("error", reject);
    socket.on("close", () => resolve());
    socket.write(bytes, () => socket.destroy());
  });
}

describe("QgaClient over virtio-serial to the dev image", () => {
  let vm: DevVm | undefined;
  let socketPath: string;

  async function withClient<T>(fn: (client: QgaClient) => Promise<T>): Promise<T> {
    const client = await QgaClient.connect(socketPath, { timeoutMs: 60_000 });
    try {
      return await fn(client);
    } finally {
      await client.close();
    }
  }

  async function guestSeconds(client: QgaClient): Promise<number> {
    const result = await client.exec({ path: "/bin/date", args: ["-u", "+%s"] });
    expect(result.exitCode).toBe(0);
    return Number(result.stdout.toString().trim());
  }

  beforeAll(async () => {
    buildDevImage();
    vm = await bootDevImage();
    socketPath = vm.socketPath;
    // The first connect waits for QEMU's socket and then for the booting guest's agent to answer the resync.
    const client = await QgaClient.connect(socketPath, { timeoutMs: BOOT_TIMEOUT_MS });
    await client.close();
  }, BOOT_TIMEOUT_MS + 30_000);

  afterAll(async () => {
    await vm?.stop();
  });

  it("runs a process in the guest with stdin", async () => {
    const result = await withClient((client) =>
      client.exec({ path: "/bin/sh", args: ["-c", "cat; uname -s"], stdin: "from the host\n" }),
    );
    expect(result.exitCode).toBe(0);
    expect(result.stdout.toString()).toBe("from the host\nLinux\n");
  });

  it("answers correctly after a previous client left a reply unread and a command half-written", async () => {
    // Over virtio-serial the next client receives whatever the previous one did not read (the unix-listen tests
    // show the hazard deterministically; here QEMU's timing decides how much of the mess survives the hang-up).
    await raw(socketPath, '{"execute":"guest-info"}\n{"execute":"guest-exec","arguments":{"path":"/bin/echo');
    const result = await withClient((client) => client.exec({ path: "/bin/echo", args: ["clean"] }));
    expect(result.stdout.toString()).toBe("clean\n");
  });

  it("sets the guest clock from its RTC when given no time", async () => {
    await withClient(async (client) => {
      const wrong = await client.exec({ path: "/bin/date", args: ["-u", "-s", "@2000000000"] });
      expect(wrong.exitCode).toBe(0);
      expect(await guestSeconds(client)).toBeGreaterThanOrEqual(2_000_000_000);
      await client.setTime();
      // QEMU's RTC follows the host clock; the margin only covers a slow TCG guest on a busy host.
      expect(Math.abs((await guestSeconds(client)) - Date.now() / 1000)).toBeLessThan(600);
    });
  });

  it("sets the guest clock to a Date and to nanoseconds since the epoch", async () => {
    await withClient(async (client) => {
      const target = Date.parse("2031-02-03T04:05:06Z") / 1000;
      await client.setTime(new Date(target * 1000));
      const afterDate = await guestSeconds(client);
      expect(afterDate).toBeGreaterThanOrEqual(target);
      expect(afterDate).toBeLessThan(target + 600);

      const nsTarget = 2_000_000_000n * 1_000_000_000n + 999_999_999n;
      await client.setTime(nsTarget);
      const afterBigint = await guestSeconds(client);
      expect(afterBigint).toBeGreaterThanOrEqual(2_000_000_000);
      expect(afterBigint).toBeLessThan(2_000_000_600);
    });
  });
});
