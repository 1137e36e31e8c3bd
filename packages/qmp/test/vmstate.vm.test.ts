import { randomBytes } from "node:crypto";
import { closeSync, openSync } from "node:fs";
import { copyFile, mkdir, readdir, readFile, rename, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  chooseSaveMethod,
  memoryBackendArgs,
  QmpClient,
  restoreVmState,
  type SaveMethod,
  saveVmState,
} from "../src/index.js";
import { type QemuProcess, rejection, removeDir, shortTempDir, startQemu } from "./qemu.js";

const BLOB_ADDR = 0x2000000;
const BLOB_BYTES = 1024 * 1024;
const RAM_MIB = 64;

let dir: string;
let blobPath: string;
let blob: Buffer;
const cleanups: (() => Promise<void>)[] = [];

beforeEach(async () => {
  dir = await shortTempDir();
  blob = randomBytes(BLOB_BYTES);
  blobPath = path.join(dir, "blob.bin");
  await writeFile(blobPath, blob);
});

afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
  await removeDir(dir);
});

/**
 * A small PC guest (SeaBIOS with nothing to boot). The source loads a random blob at BLOB_ADDR; a restore target
 * does not, so finding the blob there proves it came through the saved state (or the RAM file).
 */
function guestArgs(ramFile?: { share: boolean }, loadBlob = true): string[] {
  return [
    "-machine",
    "pc",
    "-accel",
    "tcg",
    "-m",
    String(RAM_MIB),
    ...(loadBlob ? ["-device", `loader,file=${blobPath},addr=${BLOB_ADDR},force-raw=on`] : []),
    ...(ramFile
      ? memoryBackendArgs({ id: "mem0", path: path.join(dir, "ram"), sizeMiB: RAM_MIB, share: ramFile.share })
      : []),
  ];
}

async function boot(
  name: string,
  args: string[],
  inheritFds: number[] = [],
): Promise<{ qemu: QemuProcess; q: QmpClient }> {
  const qemu = startQemu(dir, args, name, inheritFds);
  cleanups.push(() => qemu.kill());
  const q = await QmpClient.connect(qemu.qmpPath, { timeoutMs: 60_000 });
  cleanups.push(() => q.close());
  return { qemu, q };
}

async function guestBlob(q: QmpClient, name: string): Promise<Buffer> {
  const file = path.join(dir, name);
  await q.execute("pmemsave", { val: BLOB_ADDR, size: BLOB_BYTES, filename: file });
  return readFile(file);
}

/** Boots a guest with RAM in a shared file, saves its device state with x-ignore-shared, ends it; the state path. */
async function savedOverRamFile(): Promise<string> {
  const statePath = path.join(dir, "state");
  const { qemu, q } = await boot("a", guestArgs({ share: true }));
  await saveVmState(q, { method: "x-ignore-shared", path: statePath });
  await q.quit();
  await qemu.exited;
  return statePath;
}

/** First offset where the buffers differ, or -1: a comparison vitest can report without diffing megabytes. */
function firstDifference(a: Buffer, b: Buffer): number {
  if (a.equals(b)) return -1;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return n;
}

describe("VM state save/restore on QEMU 7.2", () => {
  it("chooses x-ignore-shared only with a shared RAM file", async () => {
    const { q } = await boot("a", [...guestArgs({ share: true }), "-S"]);
    expect(await chooseSaveMethod(q, { sharedMemoryBackend: true })).toBe("x-ignore-shared");
    expect(await chooseSaveMethod(q, { sharedMemoryBackend: false })).toBe("exec");
  });

  it("chooses exec without a shared RAM file, and refuses methods this QEMU or VM cannot do", async () => {
    const { q } = await boot("a", [...guestArgs(), "-S"]);
    expect(await chooseSaveMethod(q, { sharedMemoryBackend: false })).toBe("exec");
    // Claimed, but query-memdev shows no shared backend: x-ignore-shared would save nothing restorable.
    expect(await chooseSaveMethod(q, { sharedMemoryBackend: true })).toBe("exec");
    for (const method of ["file", "mapped-ram"] as const) {
      const error = await rejection(saveVmState(q, { method, path: path.join(dir, "state") }));
      expect(error.code).toBe("UNSUPPORTED");
      expect(error.message).toMatch(new RegExp(`${method} is unsupported on QEMU 7\\.2`));
    }
    const unshared = await rejection(
      saveVmState(q, { method: "x-ignore-shared", path: path.join(dir, "state") }),
    );
    expect(unshared.code).toBe("UNSUPPORTED");
    expect(unshared.message).toMatch(/share=on/);
    // Nothing was started or written.
    expect((await q.queryStatus()).status).toBe("prelaunch");
    expect(await readdir(dir)).not.toContain("state");
  });

  it("saves through exec (a path needing shell quoting) and restores the guest memory intact", async () => {
    const stateDir = path.join(dir, "it's a dir");
    await mkdir(stateDir);
    const statePath = path.join(stateDir, "state $(touch pwned)");
    const { qemu, q } = await boot("a", guestArgs());
    expect(firstDifference(await guestBlob(q, "before.bin"), blob)).toBe(-1);
    const progress: { transferred: number; total: number }[] = [];
    const saved = await saveVmState(q, {
      method: "exec",
      path: statePath,
      onProgress: (p) => progress.push(p),
    });
    expect(saved).toMatchObject({ method: "exec", path: statePath });
    expect(saved.bytes).toBeGreaterThan(BLOB_BYTES);
    expect(progress.length).toBeGreaterThan(0);
    expect(progress.at(-1)!.total).toBeGreaterThanOrEqual(RAM_MIB * 1024 * 1024);
    expect((await q.queryStatus()).status).toBe("postmigrate");
    expect(await readdir(stateDir)).toEqual(["state $(touch pwned)"]);
    await q.quit();
    await qemu.exited;

    const restored = await boot("b", [...guestArgs(undefined, false), "-S", "-incoming", "defer"]);
    await restoreVmState(restored.q, { method: "exec", path: statePath });
    expect((await restored.q.queryStatus()).status).toBe("paused");
    expect(firstDifference(await guestBlob(restored.q, "after.bin"), blob)).toBe(-1);
    await restored.q.cont();
    expect((await restored.q.queryStatus()).running).toBe(true);
  });

  it("saves only device state with x-ignore-shared and restores over the RAM file copy-on-write", async () => {
    const ramFile = path.join(dir, "ram");
    const statePath = path.join(dir, "state");
    const { qemu, q } = await boot("a", guestArgs({ share: true }));
    const memdev = await q.execute<{ id: string; share: boolean; size: number }[]>("query-memdev");
    expect(memdev).toEqual([
      expect.objectContaining({ id: "mem0", share: true, size: RAM_MIB * 1024 * 1024 }),
    ]);
    expect(firstDifference(await guestBlob(q, "before.bin"), blob)).toBe(-1);
    const saved = await saveVmState(q, { method: "x-ignore-shared", path: statePath });
    expect(saved.method).toBe("x-ignore-shared");
    // Device state only: far smaller than the RAM it describes.
    expect(saved.bytes).toBeLessThan((RAM_MIB * 1024 * 1024) / 8);
    await q.quit();
    await qemu.exited;
    const template = await readFile(ramFile);
    expect(firstDifference(template.subarray(BLOB_ADDR, BLOB_ADDR + BLOB_BYTES), blob)).toBe(-1);
    await copyFile(ramFile, path.join(dir, "ram.before"));

    const restored = await boot("b", [...guestArgs({ share: false }, false), "-S", "-incoming", "defer"]);
    await restoreVmState(restored.q, { method: "x-ignore-shared", path: statePath });
    expect((await restored.q.queryStatus()).status).toBe("paused");
    expect(firstDifference(await guestBlob(restored.q, "after.bin"), blob)).toBe(-1);
    // Let the restored guest run and write to its RAM; with share=off none of it may reach the file.
    await restored.q.cont();
    expect((await restored.q.queryStatus()).running).toBe(true);
    await restored.q.execute("system_reset");
    await restored.q.stop();
    await restored.q.quit();
    await restored.qemu.exited;
    expect(firstDifference(await readFile(ramFile), await readFile(path.join(dir, "ram.before")))).toBe(-1);
  });

  it("restores from a descriptor QEMU inherited, with no shell and no path lookup", async () => {
    const statePath = await savedOverRamFile();
    const fd = openSync(statePath, "r");
    // Gone by name: only the inherited descriptor can still reach the state.
    await rename(statePath, path.join(dir, "elsewhere"));
    await writeFile(statePath, "not a migration stream");
    const restored = await boot(
      "b",
      [...guestArgs({ share: false }, false), "-S", "-incoming", "defer"],
      [fd],
    );
    closeSync(fd);
    await restoreVmState(restored.q, { method: "x-ignore-shared", path: statePath, fd: 3 });
    expect((await restored.q.queryStatus()).status).toBe("paused");
    expect(firstDifference(await guestBlob(restored.q, "after.bin"), blob)).toBe(-1);
  });

  it("reports why a save failed and leaves no partial file", async () => {
    const { q } = await boot("a", guestArgs());
    const error = await rejection(
      saveVmState(q, { method: "exec", path: path.join(dir, "missing", "state") }),
    );
    expect(error.code).toBe("MIGRATION_FAILED");
    expect(error.message).toMatch(/missing/);
    expect(error.desc).toBeTruthy();
    expect((await readdir(dir)).filter((f) => f.includes("state"))).toEqual([]);
  });

  it("fails a restore clearly when the capabilities differ from the save", async () => {
    const statePath = await savedOverRamFile();
    const restored = await boot("b", [...guestArgs({ share: false }, false), "-S", "-incoming", "defer"]);
    const method: SaveMethod = "exec";
    const error = await rejection(restoreVmState(restored.q, { method, path: statePath }));
    expect(error.code).toBe("MIGRATION_FAILED");
    expect(error.message).toMatch(/capabilities/);
    expect(await restored.qemu.exited).not.toBe(0);
  });

  it("refuses an x-ignore-shared restore over a RAM file mapped share=on", async () => {
    const { q } = await boot("b", [...guestArgs({ share: true }, false), "-S", "-incoming", "defer"]);
    await writeFile(path.join(dir, "state"), "");
    const error = await rejection(
      restoreVmState(q, { method: "x-ignore-shared", path: path.join(dir, "state") }),
    );
    expect(error.code).toBe("UNSUPPORTED");
    expect(error.message).toMatch(/share=off/);
    expect((await q.queryStatus()).status).toBe("inmigrate");
  });

  it("refuses to restore into a QEMU not started with -incoming defer", async () => {
    const { q } = await boot("a", [...guestArgs(), "-S"]);
    await writeFile(path.join(dir, "state"), "");
    const error = await rejection(restoreVmState(q, { method: "exec", path: path.join(dir, "state") }));
    expect(error.code).toBe("MIGRATION_FAILED");
    expect(error.message).toMatch(/-incoming defer/);
  });
});
