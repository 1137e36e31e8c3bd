import { existsSync, readFileSync } from "node:fs";
import type { Context } from "../core/context.js";
import { describeFreeSpace } from "../core/disk-space.js";
import type { InstancePaths } from "../core/paths.js";
import { commandLine, identify, isSameProcess, type ProcessIdentity } from "../core/process-identity.js";
import { checkServices, type ServiceHealth } from "../guest/health.js";
import { connectQmp } from "../vm/qemu-process.js";
import { type InstanceState, readState } from "./instance-state.js";
import { readRecordedPorts, type ServicePorts } from "./port-assignment.js";

export type InstanceStatus = "running" | "stopped" | "broken";

/**
 * What an instance is, decided in one place (like Lima's store.Inspect): every command that asks "is it running?"
 * asks this. `running` means a QEMU of ours is alive with a recorded state; with `probe`, also that the VM runs and
 * every service answers healthy.
 */
export interface Inspection {
  name: string;
  status: InstanceStatus;
  /** Why it is broken, with the command that recovers it. */
  problem?: string;
  /** The recorded state of the live QEMU. */
  state?: InstanceState;
  /** A recorded state whose QEMU is gone (killed, crashed, the host rebooted). */
  stale?: InstanceState;
  /** A QEMU started from our pid file for which no state was ever written (a start that did not finish). */
  orphan?: ProcessIdentity;
  /** A `stop` saved the running state: the next start resumes it if it still fits (its seal, the host, the image). */
  savedState: boolean;
  /** Host ports in use while running, else the ones recorded for the next start (empty: the defaults). */
  ports: ServicePorts;
  /** With `probe`: QEMU's run state (`running`, `paused`, ...) or `unreachable`, and each service's health. */
  vm?: string;
  health?: ServiceHealth[];
}

/** A QEMU started with this instance's pid file, alive, whatever the state file says. */
function qemuOfPidFile(paths: InstancePaths): ProcessIdentity | undefined {
  let pid: number;
  try {
    pid = Number.parseInt(readFileSync(paths.pidFile, "utf8"), 10);
  } catch {
    return undefined;
  }
  const identity = identify(pid);
  // The pid file may be stale and its pid reused: only a process started with our pid file is ours.
  return identity && commandLine(pid).includes(paths.pidFile) ? identity : undefined;
}

async function vmRunState(paths: InstancePaths): Promise<string> {
  try {
    const qmp = await connectQmp(paths, 2000);
    try {
      return (await qmp.queryStatus()).status;
    } finally {
      await qmp.close();
    }
  } catch {
    return "unreachable";
  }
}

export const failingServices = (results: ServiceHealth[]) =>
  results
    .filter((r) => !r.healthy)
    .map((r) => `${r.name}: ${r.error ?? r.status}`)
    .join(", ");

/** Why a running instance does not serve, with what recovers it: the words of `status` and of `start`. */
function brokenProblem(home: string, vm: string, health: ServiceHealth[]): string {
  if (vm === "io-error") {
    return `the VM paused on a failed disk write (${describeFreeSpace(home)}); free space there, then \`stack-emulator start\` continues it, nothing lost`;
  }
  if (vm !== "running") return `the VM is ${vm}; \`stack-emulator start\` starts it again`;
  return `services do not answer (${failingServices(health)}); \`stack-emulator start\` waits for them and restarts the VM if they stay silent`;
}

/**
 * Inspects the instance. `probe`: also ask QEMU for its run state and each service for its health. `repair` (a
 * command holding the instance lock): an unreadable state file is set aside, with a warning.
 */
export async function inspectInstance(
  ctx: Context,
  options: { probe?: boolean; repair?: boolean } = {},
): Promise<Inspection> {
  const { paths } = ctx;
  const stateFileThere = existsSync(paths.state);
  const recorded = readState(paths, options.repair ? (message) => ctx.report.warn(message) : undefined);
  const base = { name: ctx.name, savedState: existsSync(paths.suspend) };
  const recordedPorts = () => readRecordedPorts(paths.ports) ?? {};
  if (!recorded || !isSameProcess(recorded.qemu)) {
    const orphan = qemuOfPidFile(paths);
    const inspection: Inspection = { ...base, status: "stopped", ports: recordedPorts() };
    if (recorded) {
      inspection.stale = recorded;
      inspection.status = "broken";
      inspection.problem = `QEMU (pid ${recorded.qemu.pid}) is gone; \`stack-emulator start\` recovers, \`stack-emulator reset\` starts over`;
    }
    if (orphan) {
      inspection.orphan = orphan;
      inspection.status = "broken";
      inspection.problem = `QEMU (pid ${orphan.pid}) ${stateFileThere && !recorded ? "runs but its state file is unreadable" : "of a start that did not finish is still running (on none of your ports)"}; \`stack-emulator start\` ends it and starts again, \`stack-emulator stop\` ends it`;
    }
    return inspection;
  }
  const ports = Object.fromEntries(recorded.services.map((s) => [s.name, s.hostPort]));
  const inspection: Inspection = { ...base, status: "running", state: recorded, ports };
  if (!options.probe) return inspection;
  const [vm, health] = await Promise.all([vmRunState(paths), checkServices(recorded.services)]);
  inspection.vm = vm;
  inspection.health = health;
  if (vm !== "running" || !health.every((s) => s.healthy)) {
    inspection.status = "broken";
    inspection.problem = brokenProblem(ctx.layout.home, vm, health);
  }
  return inspection;
}
