import { EmulatorError } from "../core/errors.js";
import type { ProcessIdentity } from "../core/process-identity.js";
import type { Reporter } from "../core/report.js";

/** One launch's claim on its QEMU, from before the spawn until the QEMU ends or is handed over. */
export interface Ownership {
  /** The launch started this QEMU; `end` ends it (and cleans up after it). Called again when `end` changes. */
  launched(identity: ProcessIdentity, end: () => Promise<unknown>): void;
  /** Ended or handed over: no longer this process's to end. */
  release(): void;
}

interface Owned {
  report: Reporter;
  identity?: ProcessIdentity;
  end?: () => Promise<unknown>;
  /** Resolves once the launch has a QEMU to end, or none. */
  settled: Promise<void>;
  settle: () => void;
}

/**
 * The QEMUs this process is launching or has launched and not handed over yet. While there is one, SIGINT, SIGTERM
 * and SIGHUP end it before the process goes: an interrupted command never leaves a VM behind. (A kill -9 of the
 * CLI reaches no handler; its QEMU forwards none of the user's ports until the handover, and the next command ends
 * it.)
 */
const owned = new Set<Owned>();
const INTERRUPTS = ["SIGINT", "SIGTERM", "SIGHUP"] as const;
let ending: Promise<void> | undefined;
/** Why this process was interrupted: from then on it launches no QEMU. */
let interruptedBy: string | undefined;

function onInterrupt(signal: NodeJS.Signals): void {
  void endOwnedVms(`${signal}`).then(() => {
    // The handlers are gone with the last VM: the signal's default action now ends the process with the status a
    // shell expects, unless another part of the CLI handles it (run passes signals to its child).
    process.kill(process.pid, signal);
  });
}

/** Refuses to go on with a command that was interrupted while the VM it owned was being ended. */
export function checkNotInterrupted(): void {
  if (interruptedBy) {
    throw new EmulatorError("INTERRUPTED", `the command was interrupted (${interruptedBy})`);
  }
}

/** Takes ownership of a QEMU about to be launched: from now on an interrupt waits for it, then ends it. */
export function ownLaunch(report: Reporter): Ownership {
  checkNotInterrupted();
  if (owned.size === 0) for (const signal of INTERRUPTS) process.on(signal, onInterrupt);
  let settle = () => {};
  const settled = new Promise<void>((resolve) => {
    settle = resolve;
  });
  const entry: Owned = { report, settled, settle };
  owned.add(entry);
  return {
    launched(identity, end) {
      entry.identity = identity;
      entry.end = end;
      entry.settle();
    },
    release() {
      entry.settle();
      if (!owned.delete(entry) || owned.size > 0) return;
      for (const signal of INTERRUPTS) process.off(signal, onInterrupt);
    },
  };
}

/** Ends every QEMU this process owns, once however often it is asked: the command was interrupted by `why`. */
export function endOwnedVms(why: string): Promise<void> {
  interruptedBy ??= why;
  ending ??= (async () => {
    for (const entry of [...owned]) {
      await entry.settled;
      if (entry.identity && entry.end) {
        entry.report.warn(`${why}: ending the VM this command started (QEMU pid ${entry.identity.pid})`);
        await entry.end().catch(() => undefined);
      }
      owned.delete(entry);
    }
    if (owned.size === 0) for (const signal of INTERRUPTS) process.off(signal, onInterrupt);
  })().finally(() => {
    ending = undefined;
  });
  return ending;
}
