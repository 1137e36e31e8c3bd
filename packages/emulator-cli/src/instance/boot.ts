import { existsSync } from "node:fs";
import { EmulatorError, isEmulatorError } from "../core/errors.js";
import { rememberAcceleratorFailure } from "../host/host.js";
import { createOverlay, inspectInstanceDisk, makeInstanceDisk, setAsideInstanceDisk } from "../vm/disks.js";
import { checkNotInterrupted } from "../vm/owned.js";
import { fingerprintDifferences, readSnapshot } from "../vm/snapshot.js";
import { stableImageDisk } from "../vm/snapshot-store.js";
import { type BootInputs, fingerprint, onTcg } from "./boot-inputs.js";
import type { BootAttempt, BootFacts, BootPlan } from "./boot-plan.js";
import { planBoot } from "./boot-plan.js";
import { captureSnapshot } from "./capture.js";
import { AcceleratorFailed, type BootOutcome, coldBootWithKeys } from "./cold-boot.js";
import { resumeSaved, resumeSnapshot } from "./resume.js";
import { dropSuspend, ramOutsideStream, readSuspend, type SuspendRecord, sealProblem } from "./suspend.js";

/** Says why a faster path was not taken: printed now, kept in the instance state for `status`. */
export type Note = (why: string) => void;

/** The facts planBoot decides on, read from the instance directory and the snapshot store. */
function gatherFacts(inputs: BootInputs): { facts: BootFacts; saved?: SuspendRecord } {
  const { paths } = inputs.ctx;
  const saved = readSuspend(paths, (message) => inputs.ctx.report.warn(message));
  const facts: BootFacts = {
    disk: inspectInstanceDisk(paths, inputs.image.manifest.digest, (message) =>
      inputs.ctx.report.warn(message),
    ),
    snapshotsOff: inputs.method === undefined,
  };
  if (saved) {
    const unsealed = sealProblem(paths, saved);
    facts.saved = {
      differences: [
        ...(unsealed ? [unsealed] : []),
        ...fingerprintDifferences(saved.fingerprint, fingerprint(inputs, saved.method)),
      ],
      ramMissing: saved.ram.kind === "file" && ramOutsideStream(saved) && !existsSync(saved.ram.path),
    };
  }
  if (inputs.method) {
    const { manifest, problem } = inputs.snapshot
      ? readSnapshot(inputs.snapshot)
      : { problem: "no snapshot" };
    const differences = manifest
      ? fingerprintDifferences(manifest.fingerprint, fingerprint(inputs, inputs.method))
      : [];
    facts.snapshot = !manifest
      ? problem === "no snapshot"
        ? { kind: "none" }
        : { kind: "unusable", problem: problem ?? "the snapshot is unusable" }
      : differences.length > 0
        ? { kind: "stale", differences }
        : { kind: "usable" };
  }
  return { facts, ...(saved ? { saved } : {}) };
}

async function runAttempt(
  inputs: BootInputs,
  attempt: BootAttempt,
  saved?: SuspendRecord,
): Promise<BootOutcome> {
  const { paths } = inputs.ctx;
  switch (attempt.kind) {
    case "resume-saved":
      return resumeSaved(inputs, saved as SuspendRecord);
    case "cold-boot-instance-disk":
      dropSuspend(paths);
      return coldBootWithKeys(inputs, paths.disk);
    case "resume-snapshot":
      return resumeSnapshot(inputs);
    case "capture-and-resume": {
      const snapshot = await captureSnapshot(inputs, inputs.method as NonNullable<BootInputs["method"]>);
      return resumeSnapshot({ ...inputs, snapshot });
    }
    case "cold-boot-new-disk": {
      const base = stableImageDisk(inputs.ctx.layout, inputs.image);
      await makeInstanceDisk(paths, inputs.image.manifest.digest, (disk) =>
        createOverlay(inputs.resolved.qemuImg, base, disk),
      );
      return coldBootWithKeys(inputs, paths.disk);
    }
  }
}

/** A failure that another path cannot avoid: it ends the plan instead of moving on to the next attempt. */
function endsThePlan(error: unknown): boolean {
  return (
    error instanceof AcceleratorFailed ||
    isEmulatorError(error, "ACCEL_UNUSABLE") ||
    isEmulatorError(error, "NO_SPACE") ||
    isEmulatorError(error, "INTERRUPTED")
  );
}

/**
 * A failure of the guest after its state loaded: slow (a short STACK_EMULATOR_GUEST_TIMEOUT, a loaded host), not a
 * sign that the snapshot is bad, so the snapshot is not recaptured over it.
 */
function guestNotReady(error: unknown): boolean {
  return (["UNHEALTHY", "AGENT_TIMEOUT", "GUEST_COMMAND_FAILED"] as const).some((code) =>
    isEmulatorError(error, code),
  );
}

/** Runs the plan's attempts in order until one ends healthy; each failure is noted with what follows it. */
async function runPlan(inputs: BootInputs, note: Note): Promise<BootOutcome> {
  const { facts, saved } = gatherFacts(inputs);
  const plan: BootPlan = planBoot(facts);
  if (plan.setAsideDisk) {
    note(`${plan.setAsideDisk}; kept as ${setAsideInstanceDisk(inputs.ctx.paths)}, starting fresh`);
  }
  for (const why of plan.notes) note(why);
  let attempts = plan.attempts;
  while (attempts.length > 0) {
    const [attempt, ...rest] = attempts as [BootAttempt, ...BootAttempt[]];
    attempts = rest;
    try {
      return await runAttempt(inputs, attempt, saved);
    } catch (error) {
      if (!attempt.ifItFails || endsThePlan(error)) throw error;
      if (attempt.kind === "resume-snapshot" && guestNotReady(error)) {
        attempts = attempts.filter((next) => next.kind !== "capture-and-resume");
        note(
          `${attempt.ifItFails.failed} failed (${(error as Error).message}); the snapshot loaded, so it is kept; cold booting`,
        );
        continue;
      }
      note(`${attempt.ifItFails.failed} failed (${(error as Error).message}); ${attempt.ifItFails.next}`);
    }
  }
  throw new Error("a boot plan always ends with a cold boot");
}

/**
 * Runs `boot`; when a hardware accelerator fails it, the same boot again on tcg, said and remembered for this host.
 * Not when the user asked for that accelerator by name: then the failure is theirs to see (ACCEL_UNUSABLE).
 */
export async function withAcceleratorFallback<T>(
  inputs: BootInputs,
  note: Note,
  boot: (inputs: BootInputs) => Promise<T>,
): Promise<{ result: T; inputs: BootInputs }> {
  let current = inputs;
  for (;;) {
    try {
      return { result: await boot(current), inputs: current };
    } catch (error) {
      if (!(error instanceof AcceleratorFailed)) throw error;
      // An interrupt ends the VM under the boot, which then looks like the accelerator's failure; it is not one.
      checkNotInterrupted();
      if (current.resolved.accelOverridden) {
        throw new EmulatorError(
          "ACCEL_UNUSABLE",
          `EMULATOR_ACCEL=${error.accel}: ${error.reason}`,
          "unset EMULATOR_ACCEL to let the emulator choose an accelerator that works (tcg at worst)",
        );
      }
      rememberAcceleratorFailure(current.ctx.layout, current.resolved, error.reason);
      note(`${error.message}; using tcg from now on`);
      current = onTcg(current);
    }
  }
}

/** Boots by the plan, the fastest path that works first, every fallback noted. */
export function bootByPlan(inputs: BootInputs, note: Note) {
  return withAcceleratorFallback(inputs, note, (current) => runPlan(current, note));
}
