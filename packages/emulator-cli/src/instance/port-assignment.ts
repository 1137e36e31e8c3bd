import { mkdirSync, rmSync } from "node:fs";
import { dirname } from "node:path";
import * as v from "valibot";
import { writeFileAtomic } from "../core/fs-atomic.js";
import type { InstancePaths } from "../core/paths.js";
import { isPortFree, pickFreePort, portSchema, type ServiceSpec } from "../core/ports.js";
import { isSameProcess } from "../core/process-identity.js";
import type { PortRequest, PortsMode } from "../core/settings.js";
import { readStateFile, type Warn } from "../core/state-file.js";
import { readState } from "./instance-state.js";

export type ServicePorts = Record<string, number>;

const recordedPortsSchema = v.object({ version: v.literal(1), ports: v.record(v.string(), portSchema) });

/** The ports recorded for this instance (`--ports auto`); with `warn`, an unreadable record is set aside. */
export function readRecordedPorts(file: string, warn?: Warn): ServicePorts | undefined {
  return readStateFile(file, recordedPortsSchema, { warn })?.ports;
}

export function recordPorts(file: string, ports: ServicePorts): void {
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  writeFileAtomic(file, `${JSON.stringify({ version: 1, ports }, null, 2)}\n`);
}

export function forgetRecordedPorts(file: string): void {
  rmSync(file, { force: true });
}

export interface PortPlanInput {
  services: ServiceSpec[];
  /** Ports given by variables (settings.ports.given), by service name. */
  given: Record<string, PortRequest>;
  instance: string;
  mode?: PortsMode;
  recorded?: ServicePorts;
  /** Ports other instances of this home use or recorded: never picked, even while those are stopped. */
  reserved: ReadonlySet<number>;
  isFree: (port: number) => Promise<boolean>;
  pickFree: (taken: ReadonlySet<number>) => Promise<number>;
}

export interface PortPlan {
  ports: ServicePorts;
  /** What to keep in the instance's ports file: auto ports are recorded, `default` forgets them. */
  record: ServicePorts | "forget" | undefined;
  note?: string;
}

/**
 * Host ports for each service, by precedence: a flag beats a variable, which beats the instance's record, which
 * beats the image's default. `--ports auto` makes every port automatic, given ones included: each service gets its
 * recorded port while that is free, else a free one; `--ports default` takes the image's ports. Without the flag a
 * port given by its variable is used as it is, and an instance other than `default` whose default ports are taken
 * (by the default instance, typically) goes auto by itself.
 */
export async function planPorts(input: PortPlanInput): Promise<PortPlan> {
  const given = input.mode ? {} : input.given;
  const forwarded = input.services.filter((s) => !s.sameHostPort);
  const movable = forwarded.filter((s) => given[s.name] === undefined);
  const recorded = input.mode === "default" ? undefined : input.recorded;
  let auto = input.mode === "auto";
  let note: string | undefined;
  if (!input.mode && !recorded && input.instance !== "default") {
    for (const service of movable) {
      if (!(await input.isFree(service.defaultHostPort))) {
        auto = true;
        note = `default port ${service.defaultHostPort} (${service.name}) is taken: instance ${input.instance} uses free ports, kept for its next starts`;
        break;
      }
    }
  }
  const ports: ServicePorts = {};
  for (const service of input.services) {
    ports[service.name] = service.sameHostPort
      ? service.guestPort
      : (given[service.name]?.port ?? service.defaultHostPort);
  }
  const taken = new Set([...input.reserved, ...Object.values(ports)]);
  for (const service of movable) {
    const previous = recorded?.[service.name];
    let port = previous ?? service.defaultHostPort;
    if (auto && (previous === undefined || taken.has(previous) || !(await input.isFree(previous)))) {
      port = await input.pickFree(taken);
    }
    taken.add(port);
    ports[service.name] = port;
  }
  const record = auto
    ? Object.fromEntries(movable.map((s) => [s.name, ports[s.name] as number]))
    : input.mode === "default"
      ? "forget"
      : undefined;
  return { ports, record, ...(note ? { note } : {}) };
}

/** planPorts with the real network and the instance's record, which it updates. */
export async function assignPorts(
  paths: InstancePaths,
  input: Omit<PortPlanInput, "recorded" | "isFree" | "pickFree">,
  warn: Warn,
): Promise<PortPlan> {
  const file = paths.ports;
  const own = portsOfOwnVm(paths);
  const plan = await planPorts({
    ...input,
    recorded: readRecordedPorts(file, warn),
    isFree: async (port) => own.has(port) || isPortFree(port),
    pickFree: pickFreePort,
  });
  // Recorded before the boot, so instances started at the same moment see each other's picks as reserved.
  if (plan.record === "forget") forgetRecordedPorts(file);
  else if (plan.record) recordPorts(file, plan.record);
  return plan;
}

/**
 * The host ports the instance's own QEMU forwards while it runs. They are free for the instance's start, which keeps
 * that VM or ends it before it boots: a VM that runs but does not serve must not push its instance to other ports.
 */
function portsOfOwnVm(paths: InstancePaths): Set<number> {
  const state = readState(paths);
  return new Set(state && isSameProcess(state.qemu) ? state.services.map((service) => service.hostPort) : []);
}
