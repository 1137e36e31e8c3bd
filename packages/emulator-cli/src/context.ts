import { type HomeLayout, type InstancePaths, instancePaths } from "./paths.js";
import type { Reporter } from "./report.js";

/** What every command works with: where state lives, which instance, the environment, and where progress goes. */
export interface Context {
  layout: HomeLayout;
  name: string;
  paths: InstancePaths;
  env: NodeJS.ProcessEnv;
  report: Reporter;
}

export function createContext(
  layout: HomeLayout,
  name: string,
  env: NodeJS.ProcessEnv,
  report: Reporter,
): Context {
  return { layout, name, paths: instancePaths(layout, name), env, report };
}

/** A timeout the user may set in seconds (`STACK_EMULATOR_*_TIMEOUT`), in milliseconds; the fallback otherwise. */
export function timeoutMsFromEnv(env: NodeJS.ProcessEnv, name: string, fallbackMs: number): number {
  const seconds = Number(env[name]);
  return env[name] && Number.isFinite(seconds) && seconds > 0 ? seconds * 1000 : fallbackMs;
}

export const msSince = (since: number) => Date.now() - since;
