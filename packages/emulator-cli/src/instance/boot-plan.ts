import type { InstanceDisk } from "../vm/disks.js";

/**
 * What decides how a start boots, gathered before anything runs. Pure data: planBoot turns it into the ordered list
 * of attempts, so every branch of the decision is testable without a VM.
 */
export interface BootFacts {
  disk: InstanceDisk;
  /** A state saved by `stop`, with what no longer fits the host (empty when it fits). */
  saved?: { differences: string[]; ramMissing: boolean };
  /** EMULATOR_NO_SNAPSHOT=1 or --skip-snapshot: no snapshot is used or captured, a saved state is dropped. */
  snapshotsOff: boolean;
  /** The image's snapshot; absent when snapshots are off. */
  snapshot?:
    | { kind: "none" }
    | { kind: "usable" }
    | { kind: "unusable"; problem: string }
    | { kind: "stale"; differences: string[] };
}

export type BootAttemptKind =
  | "resume-saved"
  | "cold-boot-instance-disk"
  | "resume-snapshot"
  | "capture-and-resume"
  | "cold-boot-new-disk";

export interface BootAttempt {
  kind: BootAttemptKind;
  /** For every attempt but the last: how its failure reads, and what follows it. */
  ifItFails?: { failed: string; next: string };
}

export interface BootPlan {
  /** Why a faster path does not apply, known before anything runs; each is printed and kept in the state. */
  notes: string[];
  /** Set when the instance disk was made for another image: it is put aside (never deleted) before booting. */
  setAsideDisk?: string;
  attempts: BootAttempt[];
}

const RESUME_SAVED: BootAttempt = {
  kind: "resume-saved",
  ifItFails: { failed: "resuming the saved state", next: "booting from the instance disk" },
};
const RESUME_SNAPSHOT: BootAttempt = {
  kind: "resume-snapshot",
  ifItFails: { failed: "resuming the snapshot", next: "recapturing" },
};
const CAPTURE_AND_RESUME: BootAttempt = {
  kind: "capture-and-resume",
  ifItFails: { failed: "snapshot capture or resume", next: "cold booting without a snapshot" },
};

/** The fastest path that applies first, then each slower one; a cold boot always ends the list. */
export function planBoot(facts: BootFacts): BootPlan {
  const notes: string[] = [];
  const attempts: BootAttempt[] = [];
  let setAsideDisk: string | undefined;

  if (facts.disk.kind === "foreign") {
    setAsideDisk = `the instance disk belongs to another image (${facts.disk.imageDigest ?? "unknown"})`;
  } else if (facts.disk.kind === "ours") {
    // The instance's data lives on its disk: it is booted, never replaced by the snapshot's.
    const { saved } = facts;
    if (saved && facts.snapshotsOff) {
      notes.push(
        "snapshots are off (EMULATOR_NO_SNAPSHOT=1): the saved state is dropped, booting from the instance disk",
      );
    } else if (saved && saved.differences.length === 0 && !saved.ramMissing) {
      attempts.push(RESUME_SAVED);
    } else if (saved) {
      const why = saved.ramMissing ? "its RAM file is gone" : saved.differences.join(", ");
      notes.push(`the saved state cannot be resumed (${why}); booting from the instance disk`);
    }
    return { notes, attempts: [...attempts, { kind: "cold-boot-instance-disk" }] };
  }

  const { snapshot } = facts;
  if (snapshot) {
    if (snapshot.kind === "stale") {
      notes.push(
        `the snapshot does not fit this host any more (${snapshot.differences.join(", ")}); recapturing`,
      );
    } else if (snapshot.kind === "unusable") {
      notes.push(`${snapshot.problem}; recapturing`);
    }
    if (snapshot.kind === "usable") attempts.push(RESUME_SNAPSHOT);
    attempts.push(CAPTURE_AND_RESUME);
  }
  attempts.push({ kind: "cold-boot-new-disk" });
  return { notes, attempts, ...(setAsideDisk ? { setAsideDisk } : {}) };
}
