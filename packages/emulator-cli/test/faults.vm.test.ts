// Interrupted commands on the dev image: a kill -9, Ctrl-C, SIGTERM, SIGHUP or a closed output at a step the CLI's
// trace names, then what must hold (interrupt.ts: expectRecovered). `pnpm test` runs one step per phase; the whole
// matrix runs with STACK_EMULATOR_FAULTS=all (`pnpm test:faults`).
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { QmpClient } from "@stack/qmp";
import { describe, expect, it } from "vitest";
import type { InstancePaths } from "../src/core/paths.js";
import {
  devImageFixture,
  expectKeysAsReported,
  type Instance,
  instanceFiles,
  keysOf,
  runCli,
} from "./helpers.js";
import {
  expectRecovered,
  getValue,
  type Interruption,
  interruptAt,
  placeholderAnswer,
  putValue,
  qemusOf,
} from "./interrupt.js";

const TIMEOUT = 900_000;
const dev = devImageFixture();
const FULL = process.env.STACK_EMULATOR_FAULTS === "all";

type Phase = "fresh start" | "quick-boot start" | "stop" | "capture" | "run";

interface Fault {
  phase: Phase;
  /** A mark of the CLI's trace. */
  at: string;
  how: Interruption;
  /** After the mark: the interruption lands somewhere in the step that follows (a SIGKILL then goes through the trace). */
  delayMs?: number;
}

/** The marks of each phase's trace (STACK_EMULATOR_TRACE=1), in order. */
const MARKS: Record<Phase, string[]> = {
  "fresh start": [
    "launching QEMU",
    "QMP negotiated",
    "cold boot: services answered",
    "device state saved",
    "QEMU ended",
    "snapshot committed",
    "state restored",
    "guest running",
    "guest agent in sync",
    "secrets rotated",
    "snapshot resume: services answered",
  ],
  "quick-boot start": [
    "launching QEMU",
    "state restored",
    "guest running",
    "guest agent in sync",
    "guest clock set",
  ],
  stop: ["suspend committed"],
  capture: ["QMP negotiated", "cold boot: services answered", "device state saved", "snapshot committed"],
  run: ["state restored", "guest running", "guest agent in sync"],
};

/** One step per phase for every run, each with a different interruption; the issue's own reproductions among them. */
const SAMPLE: Fault[] = [
  { phase: "fresh start", at: "QMP negotiated", how: "SIGINT" },
  { phase: "fresh start", at: "launching QEMU", how: "EPIPE", delayMs: 500 },
  { phase: "fresh start", at: "snapshot committed", how: "SIGKILL" },
  { phase: "fresh start", at: "guest agent in sync", how: "SIGKILL", delayMs: 400 },
  { phase: "quick-boot start", at: "state restored", how: "SIGKILL" },
  { phase: "stop", at: "suspend committed", how: "SIGKILL" },
  { phase: "capture", at: "device state saved", how: "SIGTERM" },
  { phase: "run", at: "guest running", how: "SIGHUP" },
];

const MATRIX: Fault[] = (Object.keys(MARKS) as Phase[]).flatMap((phase) =>
  MARKS[phase].flatMap((at) => (["SIGKILL", "SIGINT"] as const).map((how) => ({ phase, at, how }))),
);

/**
 * The command of `phase` interrupted at `fault`: a SIGKILL right at the mark is the CLI's own
 * (STACK_EMULATOR_KILL_AT), so it lands exactly there; anything else is sent when the trace shows the mark.
 */
async function interrupted(inst: Instance, fault: Fault) {
  if (fault.how === "SIGKILL" && !fault.delayMs) {
    const killed = await runCli(ARGS[fault.phase], { ...inst.env, STACK_EMULATOR_KILL_AT: fault.at });
    return { reached: killed.code === -1, stderr: killed.stderr };
  }
  const escaped = fault.at.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  return interruptAt(
    ARGS[fault.phase],
    inst.env,
    new RegExp(`trace: ${escaped} at`),
    fault.how,
    fault.delayMs,
  );
}

const KEPT = { name: "kept", value: "written before the last successful stop" };

/** An instance ready for the phase: stopped with a value saved, running with it, or new. */
async function prepare(phase: Phase): Promise<{ inst: Instance; kept?: typeof KEPT }> {
  const inst = await dev.instance();
  if (phase === "fresh start" || phase === "capture") return { inst };
  const started = await runCli(["start", "--json"], inst.env);
  expect(started.code, started.stderr).toBe(0);
  await putValue(inst, KEPT.name, KEPT.value);
  if (phase === "stop") return { inst, kept: KEPT };
  const stopped = await runCli(["stop", "--json"], inst.env);
  expect(stopped.json?.saved, stopped.stderr).toBe(true);
  return { inst, kept: KEPT };
}

const ARGS: Record<Phase, string[]> = {
  "fresh start": ["start"],
  "quick-boot start": ["start"],
  stop: ["stop"],
  capture: ["capture"],
  run: ["run", "--", "sleep", "120"],
};

/**
 * A stop killed once it wrote the state (the guest is left paused), after which the guest runs on from that point
 * and writes to its disk: the saved state no longer goes with the disk.
 */
async function guestRanOnAfterAKilledStop(): Promise<{ inst: Instance; paths: InstancePaths }> {
  const { inst } = await prepare("stop");
  const paths = instanceFiles(inst.home);
  expect((await interrupted(inst, { phase: "stop", at: "suspend committed", how: "SIGKILL" })).reached).toBe(
    true,
  );
  const qmp = await QmpClient.connect(paths.qmpSocket, { timeoutMs: 10_000 });
  await qmp.cont();
  await qmp.close();
  await putValue(inst, "later", "written after the save");
  return { inst, paths };
}

describe("an interrupted command never leaves a VM serving the public keys, and loses nothing", () => {
  it.each((FULL ? MATRIX : SAMPLE).map((f) => [`${f.phase} at "${f.at}" by ${f.how}`, f] as const))(
    "%s",
    async (_name, fault) => {
      const { inst, kept } = await prepare(fault.phase);
      const result = await interrupted(inst, fault);
      expect(result.reached, result.stderr).toBe(true);
      if (fault.how !== "SIGKILL" && fault.phase !== "stop") {
        // A handler saw it: no QEMU of an unfinished command is left at all.
        expect(qemusOf(inst.home), result.stderr).toEqual([]);
      }
      await expectRecovered(inst, kept);
    },
    TIMEOUT,
  );
});

describe("what an interruption leaves is found and said", () => {
  it(
    "a kill -9 during a cold boot leaves a QEMU on none of the user's ports; status calls it broken, start ends it and says so",
    async () => {
      const { inst } = await prepare("fresh start");
      const killed = await interrupted(inst, { phase: "fresh start", at: "QMP negotiated", how: "SIGKILL" });
      expect(killed.reached).toBe(true);
      expect(qemusOf(inst.home)).toHaveLength(1);
      expect(await placeholderAnswer(inst.backend)).toBe("refused");
      const status = await runCli(["status", "--json"], inst.env);
      expect(status.code).toBe(1);
      expect(status.json.state).toBe("broken");
      expect(status.json.problem).toMatch(/did not finish/);
      const started = await runCli(["start", "--json"], inst.env);
      expect(started.code, started.stderr).toBe(0);
      expect(started.stderr).toMatch(/ending QEMU \(pid \d+\), which no state describes/);
      expect(qemusOf(inst.home)).toHaveLength(1);
    },
    TIMEOUT,
  );

  it(
    "a stop killed once its state is saved: the paused VM is not 'already running'; the saved state is kept and resumed",
    async () => {
      const { inst } = await prepare("stop");
      const killed = await interrupted(inst, { phase: "stop", at: "suspend committed", how: "SIGKILL" });
      expect(killed.reached).toBe(true);
      const status = await runCli(["status", "--json"], inst.env);
      expect(status.json.state).toBe("broken");
      expect(status.json.problem).toMatch(/the VM is postmigrate/);
      const started = await runCli(["start", "--json"], inst.env);
      expect(started.code, started.stderr).toBe(0);
      expect(started.json.alreadyRunning).toBeFalsy();
      expect(started.json.boot).toBe("quick-boot");
      expect(await getValue(inst, KEPT.name)).toBe(KEPT.value);
    },
    TIMEOUT,
  );

  it(
    "a saved state whose guest ran on after it (its stop never finished) is not resumed over the changed disk",
    async () => {
      const { inst } = await guestRanOnAfterAKilledStop();
      const [pid] = qemusOf(inst.home);
      process.kill(pid as number, "SIGKILL");
      const started = await runCli(["start", "--json"], inst.env);
      expect(started.code, started.stderr).toBe(0);
      expect(started.json.boot).not.toBe("quick-boot");
      expect(started.json.fallbackReason).toMatch(/saved state cannot be resumed \(its stop did not finish/);
      expect(await getValue(inst, "later")).toBe("written after the save");
      expect(await getValue(inst, KEPT.name)).toBe(KEPT.value);
    },
    TIMEOUT,
  );

  it(
    "stop --no-save after an unfinished stop drops that stop's saved state: the next start boots the disk as it is",
    async () => {
      const { inst, paths } = await guestRanOnAfterAKilledStop();
      expect((await runCli(["stop", "--no-save"], inst.env)).code).toBe(0);
      expect(existsSync(paths.suspend)).toBe(false);
      const started = await runCli(["start", "--json"], inst.env);
      expect(started.code, started.stderr).toBe(0);
      expect(await getValue(inst, "later")).toBe("written after the save");
    },
    TIMEOUT,
  );
});

describe("a state file that does not read is set aside with one warning, and the instance recovers by its plan", () => {
  it(
    "suspend.json of {}: the start boots from the disk, data kept",
    async () => {
      const { inst } = await prepare("quick-boot start");
      const paths = instanceFiles(inst.home);
      writeFileSync(paths.suspendRecord, "{}");
      const started = await runCli(["start", "--json"], inst.env);
      expect(started.code, started.stderr).toBe(0);
      expect(started.stderr.match(/is unreadable/g)).toHaveLength(1);
      expect(started.stderr).toContain(paths.suspendRecord);
      expect(started.json.boot).toBe("cold");
      expect(readFileSync(join(paths.dir, "suspend.json.unreadable"), "utf8")).toBe("{}");
      expect(await getValue(inst, KEPT.name)).toBe(KEPT.value);
    },
    TIMEOUT,
  );

  it(
    "a garbage keys.env beside a saved state: the start rotates again instead of handing out keys the guest refuses",
    async () => {
      const { inst } = await prepare("quick-boot start");
      const paths = instanceFiles(inst.home);
      writeFileSync(paths.keys, "garbage\n");
      const started = await runCli(["start", "--json"], inst.env);
      expect(started.code, started.stderr).toBe(0);
      expect(started.json.boot).toBe("quick-boot");
      expect(started.stderr).toMatch(/keys\.env is unreadable/);
      await expectKeysAsReported(inst.backend, started.json);
      const env = await runCli(["env"], inst.env);
      expect(env.code, env.stderr).toBe(0);
      expect(env.stdout).toContain(keysOf(inst).STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY as string);
      expect(await getValue(inst, KEPT.name)).toBe(KEPT.value);
    },
    TIMEOUT,
  );

  it(
    "a garbage state.json of a running instance: status says broken, start ends its QEMU, says so and starts again",
    async () => {
      const { inst } = await prepare("stop");
      writeFileSync(instanceFiles(inst.home).state, "not json");
      const status = await runCli(["status", "--json"], inst.env);
      expect(status.code).toBe(1);
      expect(status.json.state).toBe("broken");
      expect(status.json.problem).toMatch(/state file is unreadable/);
      const started = await runCli(["start", "--json"], inst.env);
      expect(started.code, started.stderr).toBe(0);
      expect(started.stderr).toMatch(/state\.json is unreadable/);
      expect(started.stderr).toMatch(/ending QEMU \(pid \d+\)/);
      expect(qemusOf(inst.home)).toHaveLength(1);
      expect(await getValue(inst, KEPT.name)).toBe(KEPT.value);
    },
    TIMEOUT,
  );
});
