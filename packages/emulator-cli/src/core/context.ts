import { EmulatorError } from "./errors.js";
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

/**
 * A timeout the user may set in seconds (`STACK_EMULATOR_*_TIMEOUT`, or the original's `EMULATOR_*_TIMEOUT` after
 * it), in milliseconds: the first of `names` that holds a positive number, else the fallback.
 */
export function timeoutMsFromEnv(
  env: NodeJS.ProcessEnv,
  names: string | readonly string[],
  fallbackMs: number,
): number {
  for (const name of typeof names === "string" ? [names] : names) {
    const seconds = Number(env[name]);
    if (env[name] && Number.isFinite(seconds) && seconds > 0) return seconds * 1000;
  }
  return fallbackMs;
}

/**
 * A setting that picks one of `choices` (`STACK_EMULATOR_INSTANCE_RAM=file`), undefined when unset; any other value
 * is an INVALID_ARGUMENT that lists the choices and says what unsetting it does.
 */
export function choiceFromEnv<T extends string>(
  env: NodeJS.ProcessEnv,
  name: string,
  setting: { choices: readonly T[]; isNot: string; unsetMeans: string },
): T | undefined {
  const value = env[name];
  if (value === undefined || (setting.choices as readonly string[]).includes(value))
    return value as T | undefined;
  throw new EmulatorError(
    "INVALID_ARGUMENT",
    `${name}=${value} is not ${setting.isNot}`,
    `use ${setting.choices.join(" or ")}, or unset it to ${setting.unsetMeans}`,
  );
}

export const msSince = (since: number) => Date.now() - since;
