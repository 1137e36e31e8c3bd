import { contractServices, DEFAULT_PORT_PREFIX, parsePortPrefix } from "../contract/contract.js";
import { EmulatorError } from "../core/errors.js";
import { resolveHome, validateInstanceName } from "../core/paths.js";
import { originalPortEnv, parsePort } from "../core/ports.js";
import type { Arch, PortRequest, PortsMode, Settings } from "../core/settings.js";
import { DEFAULT_REPO, DEFAULT_WORKFLOW } from "../image/image-store.js";

/** The flags a command may have that settings take; each command's own flags are its own business. */
export interface SettingsFlags {
  instance?: string;
  image?: string;
  repo?: string;
  tag?: string;
  branch?: string;
  pr?: string;
  run?: string;
  arch?: Arch;
  skipSnapshot?: boolean;
  ports?: string;
}

/** The first of `names` that is set (non-empty), with its name. */
function firstSet(
  env: NodeJS.ProcessEnv,
  names: readonly string[],
): { name: string; value: string } | undefined {
  for (const name of names) {
    const value = env[name];
    if (value !== undefined && value !== "") return { name, value };
  }
  return undefined;
}

/** A timeout in seconds from the first variable that is set to a positive number, in milliseconds. */
function timeoutMs(env: NodeJS.ProcessEnv, names: readonly string[], fallbackMs: number): number;
function timeoutMs(env: NodeJS.ProcessEnv, names: readonly string[]): number | undefined;
function timeoutMs(
  env: NodeJS.ProcessEnv,
  names: readonly string[],
  fallbackMs?: number,
): number | undefined {
  for (const name of names) {
    const seconds = Number(env[name]);
    if (env[name] && Number.isFinite(seconds) && seconds > 0) return seconds * 1000;
  }
  return fallbackMs;
}

/**
 * A setting that picks one of `choices`, undefined when unset; any other value is an INVALID_ARGUMENT that lists the
 * choices and says what unsetting it does.
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

function wholeNumber(env: NodeJS.ProcessEnv, name: string, min: number, max: number): number | undefined {
  const value = env[name];
  if (value === undefined || value === "") return undefined;
  if (!/^\d+$/.test(value) || Number(value) < min || Number(value) > max) {
    throw new EmulatorError(
      "INVALID_ARGUMENT",
      `${name}=${JSON.stringify(value)} is out of range`,
      `use a whole number from ${min} to ${max}, or unset it for the image's own value`,
    );
  }
  return Number(value);
}

export function parsePortsMode(value: string): PortsMode {
  if (value === "auto" || value === "default") return value;
  throw new EmulatorError(
    "INVALID_ARGUMENT",
    `--ports ${JSON.stringify(value)} is not a ports mode`,
    "use --ports auto (free ports, kept for this instance) or --ports default (the image's ports)",
  );
}

/** Ports the environment gives, by service: this project's variable first, then the original's. */
function givenPorts(env: NodeJS.ProcessEnv, prefix: string): Record<string, PortRequest> {
  const given: Record<string, PortRequest> = {};
  for (const service of contractServices(prefix)) {
    if (!service.portEnv || service.sameHostPort) continue;
    const set = firstSet(
      env,
      [service.portEnv, originalPortEnv(service.portEnv)].filter(Boolean) as string[],
    );
    if (set) given[service.name] = { port: parsePort(set.value, set.name), from: set.name };
  }
  return given;
}

/** Settings for one command: its flags over the environment (docs in core/settings.ts). */
export function buildSettings(flags: SettingsFlags, env: NodeJS.ProcessEnv): Settings {
  const prefixSet = firstSet(env, ["PORT_PREFIX", "NEXT_PUBLIC_STACK_PORT_PREFIX"]);
  const portPrefix = prefixSet ? parsePortPrefix(prefixSet.value, prefixSet.name) : DEFAULT_PORT_PREFIX;
  const arch =
    flags.arch ??
    choiceFromEnv(env, "EMULATOR_ARCH", {
      choices: ["amd64", "arm64"] as const,
      isNot: "a guest architecture",
      unsetMeans: "use the host's (or the last image's)",
    });
  const memoryMiB = wholeNumber(env, "EMULATOR_RAM", 128, 1024 * 1024);
  const cpus = wholeNumber(env, "EMULATOR_CPUS", 1, 256);
  const instanceRam = choiceFromEnv(env, "STACK_EMULATOR_INSTANCE_RAM", {
    choices: ["file", "anonymous"] as const,
    isNot: "a kind of guest RAM",
    unsetMeans: "decide by the image's RAM size",
  });
  const snapshotMethod = choiceFromEnv(env, "STACK_EMULATOR_SNAPSHOT_METHOD", {
    choices: ["x-ignore-shared", "stream"] as const,
    isNot: "a snapshot method",
    unsetMeans: "let the host decide",
  });
  const guestMs = timeoutMs(env, ["STACK_EMULATOR_GUEST_TIMEOUT", "EMULATOR_SNAPSHOT_READY_TIMEOUT"]);
  const releaseWait = Number(env.STACK_EMULATOR_RELEASE_WAIT);
  const optional = <K extends string, V>(key: K, value: V | undefined) =>
    (value === undefined ? {} : { [key]: value }) as Partial<Record<K, V>>;
  return {
    layout: resolveHome(env.STACK_EMULATOR_HOME),
    instance: validateInstanceName(flags.instance ?? env.STACK_EMULATOR_INSTANCE ?? "default"),
    ...optional("image", flags.image ?? (env.STACK_EMULATOR_IMAGE || undefined)),
    pull: {
      repo: flags.repo ?? (env.STACK_EMULATOR_REPO || DEFAULT_REPO),
      workflow: env.STACK_EMULATOR_WORKFLOW || DEFAULT_WORKFLOW,
      ...optional("tag", flags.tag),
      ...optional("branch", flags.branch),
      ...optional("pr", flags.pr),
      ...optional("run", flags.run),
      ...optional("arch", arch),
      releaseWaitMs:
        env.STACK_EMULATOR_RELEASE_WAIT && Number.isFinite(releaseWait) && releaseWait >= 0
          ? releaseWait * 1000
          : 15_000,
    },
    ports: {
      ...optional("mode", flags.ports === undefined ? undefined : parsePortsMode(flags.ports)),
      given: givenPorts(env, portPrefix),
    },
    portPrefix,
    machine: { ...optional("memoryMiB", memoryMiB), ...optional("cpus", cpus) },
    timeouts: {
      bootMs: timeoutMs(env, ["STACK_EMULATOR_BOOT_TIMEOUT", "EMULATOR_READY_TIMEOUT"], 300_000),
      agentMs: timeoutMs(env, ["STACK_EMULATOR_AGENT_TIMEOUT"], 15_000),
      ...optional("guestMs", guestMs),
      powerdownMs: timeoutMs(env, ["STACK_EMULATOR_POWERDOWN_TIMEOUT"], 10_000),
      kvmProgressMs: timeoutMs(env, ["STACK_EMULATOR_KVM_PROGRESS_TIMEOUT"], 20_000),
      accelProofMs: timeoutMs(env, ["STACK_EMULATOR_ACCEL_PROOF_TIMEOUT"], 10_000),
    },
    ...optional("instanceRam", instanceRam),
    ...optional("snapshotMethod", snapshotMethod),
    noSnapshot: Boolean(flags.skipSnapshot) || env.EMULATOR_NO_SNAPSHOT === "1",
    noRotation: env.EMULATOR_NO_ROTATION === "1",
    ...optional("devImageBuilder", env.STACK_EMULATOR_DEV_IMAGE_BUILDER || undefined),
    hostEnv: env,
  };
}
