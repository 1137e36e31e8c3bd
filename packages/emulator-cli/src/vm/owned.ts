import { EmulatorError } from "../core/errors.js";
import type { ProcessIdentity } from "../core/process-identity.js";
import type { Reporter } from "../core/report.js";

/**
 * The QEMUs this process launched and has not handed over yet. While there is one, SIGINT, SIGTERM and SIGHUP end
 * it before the process goes: an interrupted command never leaves a VM behind. (A kill -9 of the CLI reaches no
 * handler; its QEMU forwards none of the user's ports until the handover, and the next command ends it.)
 */
interface Owned {
  end: () => Promise<unknown>;
  report: Reporter;
}

const owned = new Map<ProcessIdentity, Owned>();
const INTERRUPTS = ["SIGINT", "SIGTERM", "SIGHUP"] as const;
let ending: Promise<void> | undefined;
/** Why this process was interrupted: from then on it starts no QEMU. */
let interruptedBy: string | undefined;

/** Refuses to go on with a command that was interrupted while the VM it owned was being ended. */
export function checkNotInterrupted(): void {
  if (interruptedBy) {
    throw new EmulatorError("INTERRUPTED", `the command was interrupted (${interruptedBy})`);
  }
}

function onInterrupt(signal: NodeJS.Signals): void {
  void endOwnedVms(`${signal}`).then(() => {
    // The handlers are gone with the last VM: the signal's default action now ends the process with the status a
    // shell expects, unless another part of the CLI handles it (run passes signals to its child).
    process.kill(process.pid, signal);
  });
}

/** This process owns the QEMU `identity` until `disown`; `end` ends it (and cleans up after it). */
export function own(identity: ProcessIdentity, report: Reporter, end: () => Promise<unknown>): void {
  if (owned.size === 0) for (const signal of INTERRUPTS) process.on(signal, onInterrupt);
  owned.set(identity, { end, report });
}

export function disown(identity: ProcessIdentity): void {
  if (!owned.delete(identity) || owned.size > 0) return;
  for (const signal of INTERRUPTS) process.off(signal, onInterrupt);
}

/** Ends every QEMU this process owns, once however often it is asked: the command was interrupted by `why`. */
export function endOwnedVms(why: string): Promise<void> {
  interruptedBy ??= why;
  ending ??= (async () => {
    for (const [identity, { end, report }] of [...owned]) {
      report.warn(`${why}: ending the VM this command started (QEMU pid ${identity.pid})`);
      await end().catch(() => undefined);
      disown(identity);
    }
  })().finally(() => {
    ending = undefined;
  });
  return ending;
}
