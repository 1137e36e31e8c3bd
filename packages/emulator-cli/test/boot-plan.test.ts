import { describe, expect, it } from "vitest";
import { EmulatorError, exitCodeFor } from "../src/core/errors.js";
import { type BootFacts, type BootPlan, planBoot } from "../src/instance/boot-plan.js";

const fresh: BootFacts = { disk: { kind: "none" }, snapshotsOff: false, snapshot: { kind: "usable" } };
const kinds = (plan: BootPlan) => plan.attempts.map((a) => a.kind);

describe("planBoot: the fastest path that applies, then every slower one", () => {
  it("a new instance resumes the snapshot, else recaptures, else cold boots", () => {
    const plan = planBoot(fresh);
    expect(kinds(plan)).toEqual(["resume-snapshot", "capture-and-resume", "cold-boot-new-disk"]);
    expect(plan.notes).toEqual([]);
    expect(plan.setAsideDisk).toBeUndefined();
  });

  it("captures when there is no snapshot yet, saying nothing: that is the first start, not a fallback", () => {
    const plan = planBoot({ ...fresh, snapshot: { kind: "none" } });
    expect(kinds(plan)).toEqual(["capture-and-resume", "cold-boot-new-disk"]);
    expect(plan.notes).toEqual([]);
  });

  it("recaptures a snapshot that no longer fits the host, saying what changed", () => {
    const plan = planBoot({ ...fresh, snapshot: { kind: "stale", differences: ["memoryMiB 256 -> 320"] } });
    expect(kinds(plan)).toEqual(["capture-and-resume", "cold-boot-new-disk"]);
    expect(plan.notes).toEqual([
      "the snapshot does not fit this host any more (memoryMiB 256 -> 320); recapturing",
    ]);
  });

  it("recaptures a damaged snapshot with its problem", () => {
    const plan = planBoot({
      ...fresh,
      snapshot: { kind: "unusable", problem: "snapshot file ram has 1 bytes" },
    });
    expect(kinds(plan)).toEqual(["capture-and-resume", "cold-boot-new-disk"]);
    expect(plan.notes).toEqual(["snapshot file ram has 1 bytes; recapturing"]);
  });

  it("only cold boots with snapshots off", () => {
    const { snapshot: _, ...off } = fresh;
    expect(kinds(planBoot({ ...off, snapshotsOff: true }))).toEqual(["cold-boot-new-disk"]);
  });

  it("an instance with data resumes its saved state, else boots its own disk, never the snapshot's", () => {
    const plan = planBoot({
      ...fresh,
      disk: { kind: "ours" },
      saved: { differences: [], ramMissing: false },
    });
    expect(kinds(plan)).toEqual(["resume-saved", "cold-boot-instance-disk"]);
    expect(kinds(planBoot({ ...fresh, disk: { kind: "ours" } }))).toEqual(["cold-boot-instance-disk"]);
  });

  it("does not resume a saved state that no longer fits, or whose RAM file is gone, and says why", () => {
    const differs = planBoot({
      ...fresh,
      disk: { kind: "ours" },
      saved: { differences: ["accel kvm -> tcg"], ramMissing: false },
    });
    expect(kinds(differs)).toEqual(["cold-boot-instance-disk"]);
    expect(differs.notes).toEqual([
      "the saved state cannot be resumed (accel kvm -> tcg); booting from the instance disk",
    ]);
    const noRam = planBoot({
      ...fresh,
      disk: { kind: "ours" },
      saved: { differences: [], ramMissing: true },
    });
    expect(noRam.notes[0]).toMatch(/its RAM file is gone/);
  });

  it("drops a saved state when snapshots are off", () => {
    const plan = planBoot({
      disk: { kind: "ours" },
      snapshotsOff: true,
      saved: { differences: [], ramMissing: false },
    });
    expect(kinds(plan)).toEqual(["cold-boot-instance-disk"]);
    expect(plan.notes[0]).toMatch(/^snapshots are off/);
  });

  it("puts aside a disk made for another image, then starts like a new instance", () => {
    const plan = planBoot({ ...fresh, disk: { kind: "foreign", imageDigest: "sha256:old" } });
    expect(plan.setAsideDisk).toBe("the instance disk belongs to another image (sha256:old)");
    expect(kinds(plan)).toEqual(["resume-snapshot", "capture-and-resume", "cold-boot-new-disk"]);
    expect(planBoot({ ...fresh, disk: { kind: "foreign" } }).setAsideDisk).toMatch(/\(unknown\)$/);
  });

  it("says for every attempt but the last what its failure leads to; a cold boot always ends the plan", () => {
    for (const facts of [
      fresh,
      { ...fresh, disk: { kind: "ours" as const }, saved: { differences: [], ramMissing: false } },
    ]) {
      const { attempts } = planBoot(facts);
      expect(attempts.at(-1)?.kind).toMatch(/^cold-boot-/);
      expect(attempts.at(-1)?.ifItFails).toBeUndefined();
      for (const attempt of attempts.slice(0, -1)) expect(attempt.ifItFails?.next).toBeTruthy();
    }
    expect(planBoot(fresh).attempts[0]?.ifItFails).toEqual({
      failed: "resuming the snapshot",
      next: "recapturing",
    });
  });
});

describe("exit codes", () => {
  it("are 75 for a busy instance (try again later) and 1 for everything else", () => {
    expect(exitCodeFor(new EmulatorError("BUSY", "locked"))).toBe(75);
    expect(exitCodeFor(new EmulatorError("UNHEALTHY", "no"))).toBe(1);
    expect(exitCodeFor(new Error("plain"))).toBe(1);
  });
});
