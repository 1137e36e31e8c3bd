import { readdirSync } from "node:fs";
import { createContext } from "../core/context.js";
import { describeError } from "../core/errors.js";
import { type HomeLayout, instancePaths, isValidInstanceName } from "../core/paths.js";
import type { Reporter } from "../core/report.js";
import { type StopMode, type StopResult, stop } from "./commands.js";
import { readState } from "./instance-state.js";
import { readRecordedPorts, type ServicePorts } from "./port-assignment.js";
import { status } from "./status.js";

/** Every instance directory under the home, by name. */
export function instanceNames(layout: HomeLayout): string[] {
  try {
    return readdirSync(layout.instances, { withFileTypes: true })
      .filter((entry) => entry.isDirectory() && isValidInstanceName(entry.name))
      .map((entry) => entry.name)
      .sort();
  } catch {
    return [];
  }
}

/** The ports an instance serves on while running, else the ones recorded for its next start. */
function instancePorts(layout: HomeLayout, name: string): ServicePorts {
  const paths = instancePaths(layout, name);
  const state = readState(paths);
  if (state) return Object.fromEntries(state.services.map((s) => [s.name, s.hostPort]));
  return readRecordedPorts(paths.ports) ?? {};
}

/** Ports the other instances of this home hold or will ask for again: a new pick avoids them. */
export function reservedPorts(layout: HomeLayout, except: string): Set<number> {
  const reserved = new Set<number>();
  for (const name of instanceNames(layout)) {
    if (name !== except) for (const port of Object.values(instancePorts(layout, name))) reserved.add(port);
  }
  return reserved;
}

export interface InstanceSummary {
  instance: string;
  state: "running" | "stopped" | "broken";
  problem?: string;
  image?: string;
  /** Service name -> host port: in use while running, else recorded for the next start (empty: the defaults). */
  ports: ServicePorts;
  /** How the running VM booted: cold, snapshot or quick-boot (resumed where the last stop saved it). */
  boot?: string;
  fallbackReason?: string;
  savedState: boolean;
}

export async function listInstances(
  layout: HomeLayout,
  env: NodeJS.ProcessEnv,
  report: Reporter,
): Promise<InstanceSummary[]> {
  return Promise.all(
    instanceNames(layout).map(async (name) => {
      const s = await status(createContext(layout, name, env, report));
      return {
        instance: name,
        state: s.state,
        ...(s.problem ? { problem: s.problem } : {}),
        ...(s.state === "stopped" ? {} : { image: s.image }),
        ports: instancePorts(layout, name),
        ...(s.boot ? { boot: s.boot } : {}),
        ...(s.fallbackReason ? { fallbackReason: s.fallbackReason } : {}),
        savedState: s.savedState,
      };
    }),
  );
}

export type StopAllEntry = { instance: string } & (StopResult | { error: ReturnType<typeof describeError> });

/** Stops every instance of the home, one after the other (saving is disk-bound); one failure does not stop the rest. */
export async function stopAll(
  layout: HomeLayout,
  env: NodeJS.ProcessEnv,
  report: Reporter,
  mode: StopMode,
): Promise<StopAllEntry[]> {
  const results: StopAllEntry[] = [];
  for (const name of instanceNames(layout)) {
    try {
      results.push({ instance: name, ...(await stop(createContext(layout, name, env, report), { mode })) });
    } catch (error) {
      results.push({ instance: name, error: describeError(error) });
    }
  }
  return results;
}
