import { writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { QmpClient, QmpError } from "../src/index.js";
import { removeDir, shortTempDir } from "./qemu.js";

// Connection set-up failures before any QMP is spoken; the protocol itself is tested against QEMU (*.vm.test.ts).
let dir: string | undefined;
afterEach(async () => {
  if (dir) await removeDir(dir);
  dir = undefined;
});

async function connectError(
  socketPath: string,
  opts: Parameters<typeof QmpClient.connect>[1],
): Promise<QmpError> {
  const error = await QmpClient.connect(socketPath, opts).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(QmpError);
  return error as QmpError;
}

describe("QmpClient.connect set-up failures", () => {
  it("fails fast with CONNECT_FAILED when the path cannot be a socket", async () => {
    dir = await shortTempDir();
    const file = path.join(dir, "plain");
    await writeFile(file, "");
    const error = await connectError(path.join(file, "qmp.sock"), { timeoutMs: 60_000 });
    expect(error.code).toBe("CONNECT_FAILED");
    expect(error.message).toMatch(/ENOTDIR/);
  });

  it("stops waiting for the socket when the signal aborts", async () => {
    dir = await shortTempDir();
    const ac = new AbortController();
    const pending = connectError(path.join(dir, "later.sock"), { timeoutMs: 60_000, signal: ac.signal });
    ac.abort();
    expect((await pending).code).toBe("ABORTED");
  });

  it("waits past JSON that comes before the greeting, but not forever", async () => {
    dir = await shortTempDir();
    const greeting = {
      QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 }, package: "" }, capabilities: [] },
    };
    const serve = async (before: number): Promise<{ socket: string; server: Server }> => {
      const socket = path.join(dir as string, `qmp-${before}.sock`);
      const server = createServer((conn) => {
        conn.on("error", () => undefined);
        for (let i = 0; i < before; i++) conn.write(`${JSON.stringify({ return: {} })}\r\n`);
        conn.write(`${JSON.stringify(greeting)}\r\n`);
        conn.on("data", (data) => {
          for (const line of data.toString().split("\n").filter(Boolean)) {
            const { id } = JSON.parse(line) as { id?: unknown };
            conn.write(`${JSON.stringify({ return: {}, id })}\r\n`);
          }
        });
      });
      await new Promise<void>((resolve) => server.listen(socket, resolve));
      return { socket, server };
    };
    const one = await serve(1);
    const q = await QmpClient.connect(one.socket, { timeoutMs: 5000 });
    expect(q.greeting.version.qemu.minor).toBe(2);
    await q.close();
    one.server.close();
    const many = await serve(17);
    const error = await connectError(many.socket, { timeoutMs: 5000 });
    expect(error.code).toBe("PROTOCOL");
    expect(error.message).toMatch(/no QMP greeting: is it a QMP socket/);
    many.server.close();
  });
});
