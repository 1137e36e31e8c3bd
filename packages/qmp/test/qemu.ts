import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import path from "node:path";
import { expect } from "vitest";
import { QmpError } from "../src/index.js";

export const QEMU = process.env.QEMU_SYSTEM ?? "qemu-system-x86_64";

/** Unix socket paths are limited to 108 bytes, so keep temp dirs short and directly under /tmp. */
export function shortTempDir(): Promise<string> {
  return mkdtemp("/tmp/qmp-");
}

export interface QemuProcess {
  child: ChildProcess;
  qmpPath: string;
  stderr(): string;
  /** Resolves with the exit code (or signal) once QEMU has exited. */
  exited: Promise<number | string | null>;
  kill(): Promise<void>;
}

/**
 * Starts QEMU with a QMP socket at `<dir>/<name>.sock`; the caller adds machine arguments. `inheritFds` become
 * the child's descriptors 3, 4, ...
 */
export function startQemu(dir: string, args: string[], name = "qmp", inheritFds: number[] = []): QemuProcess {
  const qmpPath = path.join(dir, `${name}.sock`);
  const child = spawn(
    QEMU,
    ["-nodefaults", "-display", "none", "-qmp", `unix:${qmpPath},server=on,wait=off`, ...args],
    { stdio: ["ignore", "ignore", "pipe", ...inheritFds] },
  );
  let stderr = "";
  child.stderr?.setEncoding("utf8").on("data", (s: string) => {
    stderr += s;
  });
  const exited = once(child, "exit").then(([code, signal]) => (code ?? signal) as number | string | null);
  return {
    child,
    qmpPath,
    stderr: () => stderr,
    exited,
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      await exited;
    },
  };
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

/** The QmpError a promise rejects with; fails the test when it resolves or rejects with anything else. */
export async function rejection(p: Promise<unknown>): Promise<QmpError> {
  try {
    await p;
  } catch (error) {
    expect(error).toBeInstanceOf(QmpError);
    return error as QmpError;
  }
  throw new Error("expected a rejection");
}
