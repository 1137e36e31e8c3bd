import { writeFile } from "node:fs/promises";
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
});
