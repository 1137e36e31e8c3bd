import { type ChildProcess, spawn } from "node:child_process";
import { HostDetectError } from "./errors.js";

const MAX_OUTPUT = 1 << 20;
const STOP_GRACE_MS = 2_000;
// A process group lets a deadline kill a wrapper script together with whatever it started.
const OWN_GROUP = process.platform !== "win32";

export interface Started {
  child: ChildProcess;
  /** Resolves once the process has exited and closed its output, with its stderr (capped). */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>;
  kill(): void;
  /** Kills the process group and waits for its output to close, at most a grace period (a child that left the
   * group may hold the pipes open forever). */
  stop(): Promise<void>;
}

/** Starts a binary in its own process group; a failure to exec becomes QEMU_NOT_RUNNABLE on `exited`. */
export function start(
  binary: string,
  args: string[],
  opts?: { captureStdout?: (chunk: string) => void },
): Started {
  const child = spawn(binary, args, {
    detached: OWN_GROUP,
    stdio: ["ignore", opts?.captureStdout ? "pipe" : "ignore", "pipe"],
    windowsHide: true,
  });
  let stderr = "";
  child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
    if (stderr.length < MAX_OUTPUT) stderr += chunk;
  });
  if (opts?.captureStdout) child.stdout?.setEncoding("utf8").on("data", opts.captureStdout);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>(
    (resolve, reject) => {
      child.once("error", (error: NodeJS.ErrnoException) =>
        reject(
          new HostDetectError(
            "QEMU_NOT_RUNNABLE",
            `Cannot run ${binary} (${error.code ?? error.message}): check that it is an executable QEMU binary for this host.`,
            { path: binary, cause: error },
          ),
        ),
      );
      child.once("close", (code, signal) => resolve({ code, signal, stderr: stderr.trim() }));
    },
  );
  // Callers may stop listening once they have their answer; an unobserved rejection must not crash the process.
  exited.catch(() => undefined);
  const kill = () => {
    if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
    try {
      if (OWN_GROUP) process.kill(-child.pid, "SIGKILL");
      else child.kill("SIGKILL");
    } catch {
      // Already gone between the check and the signal.
    }
  };
  const stop = async () => {
    kill();
    let grace: NodeJS.Timeout | undefined;
    await Promise.race([
      exited.catch(() => undefined),
      new Promise((resolve) => {
        grace = setTimeout(resolve, STOP_GRACE_MS);
      }),
    ]);
    clearTimeout(grace);
  };
  return { child, exited, kill, stop };
}

/** Runs a binary to completion and returns its stdout, or kills its process group at the deadline. */
export async function runWithDeadline(
  binary: string,
  args: string[],
  timeoutMs: number,
): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
  let stdout = "";
  const proc = start(binary, args, {
    captureStdout: (chunk) => {
      if (stdout.length < MAX_OUTPUT) stdout += chunk;
    },
  });
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), timeoutMs);
  });
  try {
    const result = await Promise.race([proc.exited, deadline]);
    if (result === "timeout") {
      await proc.stop();
      throw new HostDetectError(
        "PROBE_TIMEOUT",
        `${binary} ${args.join(" ")} did not finish within ${timeoutMs} ms and was killed: ` +
          "check that this is a working QEMU binary, or raise the probe timeout on a very slow machine.",
        { path: binary },
      );
    }
    return { code: result.code, signal: result.signal, stdout, stderr: result.stderr };
  } finally {
    clearTimeout(timer);
  }
}
