import { closeSync, openSync, readFileSync, rmSync, writeSync } from "node:fs";
import { setTimeout as delay } from "node:timers/promises";
import { EmulatorError, isEmulatorError } from "./errors.js";
import { identify, isSameProcess, type ProcessIdentity } from "./process-identity.js";

export interface Lock {
  release(): void;
}

/**
 * An exclusive lock file holding its owner's pid and start time. A lock left by a process that no longer
 * exists (or whose pid now belongs to another process) is taken over; a live owner is reported.
 */
export function acquireLock(path: string, purpose: string): Lock {
  const self = identify(process.pid);
  const record = JSON.stringify({ ...self, purpose });
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(path, "wx", 0o600);
      writeSync(fd, record);
      closeSync(fd);
      return {
        release: () => {
          if (readOwner(path)?.pid === process.pid) rmSync(path, { force: true });
        },
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      const owner = readOwner(path);
      if (owner && isSameProcess(owner)) {
        throw new EmulatorError(
          "BUSY",
          `another stack-emulator command (pid ${owner.pid}, ${owner.purpose ?? "unknown"}) is working on this instance`,
          "wait for it to finish, or stop it; the lock frees itself when that process exits",
        );
      }
      rmSync(path, { force: true });
    }
  }
  throw new EmulatorError("BUSY", `could not take the lock ${path}`, "retry the command");
}

function readOwner(path: string): (ProcessIdentity & { purpose?: string }) | undefined {
  try {
    return JSON.parse(readFileSync(path, "utf8"));
  } catch {
    return undefined;
  }
}

/**
 * `acquireLock` for a lock that is only ever held for moments (a file or two renamed): while another live process
 * holds it, waits, up to `timeoutMs`, instead of reporting BUSY at once.
 */
export async function acquireLockWaiting(path: string, purpose: string, timeoutMs = 60_000): Promise<Lock> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    try {
      return acquireLock(path, purpose);
    } catch (error) {
      if (!isEmulatorError(error, "BUSY") || Date.now() >= until) throw error;
      await delay(50);
    }
  }
}
