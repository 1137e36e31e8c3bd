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

/** A timeout the user may set in seconds (`STACK_EMULATOR_*_TIMEOUT`), in milliseconds; the fallback otherwise. */
export function timeoutMsFromEnv(env: NodeJS.ProcessEnv, name: string, fallbackMs: number): number {
  const seconds = Number(env[name]);
  return env[name] && Number.isFinite(seconds) && seconds > 0 ? seconds * 1000 : fallbackMs;
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
