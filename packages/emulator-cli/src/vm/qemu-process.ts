import { spawn } from "node:child_process";
import {
  appendFileSync,
  closeSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  rmSync,
} from "node:fs";
import { QmpClient } from "@stack/qmp";
import { EmulatorError } from "../core/errors.js";
import { ensureSocketDir, type InstancePaths } from "../core/paths.js";
import { identify, isSameProcess, type ProcessIdentity } from "../core/process-identity.js";
import { buildQemuArgs, type LaunchSpec } from "./qemu-args.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The descriptor a state file handed to QEMU at launch has in QEMU (see launchQemu's `stateFile`). */
export const INHERITED_STATE_FD = 3;

/**
 * Starts QEMU daemonized: the launcher exits once the machine is initialised (sockets listening), so its exit
 * status and stderr tell whether the start worked, and the pid file names the VM process. A `stateFile` is
 * opened here and inherited by QEMU as INHERITED_STATE_FD, for a restore that needs no shell.
 */
export async function launchQemu(spec: LaunchSpec, stateFile?: string): Promise<ProcessIdentity> {
  const { paths } = spec;
  ensureSocketDir(paths.socketDir);
  for (const stale of [paths.qmpSocket, paths.qgaSocket, paths.pidFile]) rmSync(stale, { force: true });
  const vars = spec.machine.firmware?.vars;
  // UEFI variables are per instance and persist across its boots; the template is never written.
  if (vars && !existsSync(paths.firmwareVars)) copyFileSync(vars, paths.firmwareVars);
  // The share's -fsdev names it on every launch, shared or not.
  mkdirSync(paths.shareDir, { recursive: true, mode: 0o700 });

  const args = buildQemuArgs(spec);
  const stateFd = stateFile === undefined ? undefined : openSync(stateFile, "r");
  const stderr = await new Promise<string>((resolvePromise, reject) => {
    const child = spawn(spec.machine.qemu, args, {
      stdio: ["ignore", "ignore", "pipe", ...(stateFd === undefined ? [] : [stateFd])],
    });
    let output = "";
    child.stderr?.on("data", (chunk: Buffer) => {
      output = (output + chunk.toString()).slice(-8192);
    });
    child.on("error", (error) =>
      reject(
        new EmulatorError(
          "QEMU_NOT_RUNNABLE",
          `cannot run ${spec.machine.qemu}: ${error.message}`,
          "run `stack-emulator doctor`",
        ),
      ),
    );
    child.on("close", (code) => {
      if (code === 0) {
        resolvePromise(output);
        return;
      }
      const kept = output.trim() !== "" && appendQemuLog(paths, output);
      reject(
        new EmulatorError(
          "QEMU_EXITED",
          `QEMU exited with status ${code}: ${output.trim().split("\n").slice(-5).join(" | ") || "no message"}`,
          `${kept ? `its output is in ${paths.qemuLog}; ` : ""}\`stack-emulator doctor\` checks the host`,
        ),
      );
    });
  }).finally(() => {
    if (stateFd !== undefined) closeSync(stateFd);
  });
  if (stderr.trim()) appendQemuLog(paths, stderr);
  const pid = Number.parseInt(readFileSync(paths.pidFile, "utf8").trim(), 10);
  const identity = identify(pid);
  if (!identity) {
    throw new EmulatorError(
      "QEMU_EXITED",
      "QEMU started but exited right away",
      existsSync(paths.serialLog)
        ? `the guest's console is in ${paths.serialLog}`
        : "run `stack-emulator doctor`",
    );
  }
  return identity;
}

/** QEMU's own messages (warnings, or why it failed), kept for `logs`; whether they were written. */
function appendQemuLog(paths: InstancePaths, text: string): boolean {
  try {
    appendFileSync(paths.qemuLog, `${new Date().toISOString()} ${text.trim()}\n`);
    return true;
  } catch {
    // Losing a warning line is not worth failing a start over.
    return false;
  }
}

export async function connectQmp(paths: InstancePaths, timeoutMs = 10_000): Promise<QmpClient> {
  return QmpClient.connect(paths.qmpSocket, { timeoutMs });
}

export async function waitForExit(identity: ProcessIdentity, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  // QEMU usually exits within milliseconds of `quit`: short polls first, so a capture does not wait on the timer.
  let delay = 1;
  while (isSameProcess(identity)) {
    if (Date.now() >= deadline) return false;
    await sleep(delay);
    delay = Math.min(delay * 2, 20);
  }
  return true;
}

/**
 * Ends a VM: `quit` over QMP when a connection is at hand, then SIGTERM, then SIGKILL, each given time to work.
 * Only signals the process we started (pid and start time match), never a reused pid.
 */
export async function terminate(identity: ProcessIdentity, qmp?: QmpClient): Promise<void> {
  if (qmp) {
    await qmp.quit().catch(() => undefined);
    await qmp.close().catch(() => undefined);
    if (await waitForExit(identity, 5000)) return;
  }
  for (const [signal, wait] of [
    ["SIGTERM", 5000],
    ["SIGKILL", 5000],
  ] as const) {
    if (!isSameProcess(identity)) return;
    try {
      process.kill(identity.pid, signal);
    } catch {
      return;
    }
    if (await waitForExit(identity, wait)) return;
  }
  throw new EmulatorError(
    "STOP_FAILED",
    `QEMU (pid ${identity.pid}) did not exit after SIGKILL`,
    "check the process with `ps`",
  );
}

export function removeRuntimeFiles(paths: InstancePaths): void {
  for (const file of [paths.qmpSocket, paths.qgaSocket, paths.pidFile]) rmSync(file, { force: true });
}
