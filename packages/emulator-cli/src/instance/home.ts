import { readdirSync } from "node:fs";
import { type HomeLayout, instancePaths, isValidInstanceName } from "../core/paths.js";
import { readState } from "./instance-state.js";
import { readRecordedPorts } from "./port-assignment.js";

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

/** Ports the other instances of this home hold or will ask for again: a new pick avoids them. */
export function reservedPorts(layout: HomeLayout, except: string): Set<number> {
  const reserved = new Set<number>();
  for (const name of instanceNames(layout)) {
    if (name === except) continue;
    const paths = instancePaths(layout, name);
    const state = readState(paths);
    const ports = state
      ? state.services.map((s) => s.hostPort)
      : Object.values(readRecordedPorts(paths.ports) ?? {});
    for (const port of ports) reserved.add(port);
  }
  return reserved;
}
