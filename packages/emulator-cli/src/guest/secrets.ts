import { randomBytes } from "node:crypto";
import { rmSync } from "node:fs";
import * as v from "valibot";
import { PUBLISHABLE_KEY_NAME, SECRET_NAMES } from "../contract/contract.js";
import { writeFileAtomic } from "../core/fs-atomic.js";
import type { InstancePaths } from "../core/paths.js";
import { readStateFile, type Warn } from "../core/state-file.js";

export type Secrets = Record<string, string>;

/** `rotated`: the guest holds this install's keys (in keys.env); `skipped`: the public placeholders. */
export type Rotation = "rotated" | "skipped";

/** Fresh per-install values: 32 crypto-random bytes each, as the 64 lowercase hex chars the guest accepts. */
export function generateSecrets(names: readonly string[]): Secrets {
  return Object.fromEntries(names.map((name) => [name, randomBytes(32).toString("hex")]));
}

export function formatEnv(secrets: Secrets): string {
  return Object.entries(secrets)
    .map(([name, value]) => `${name}=${value}\n`)
    .join("");
}

export function parseEnv(text: string): Secrets {
  const result: Secrets = {};
  for (const line of text.split("\n")) {
    const match = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(line.trim());
    if (match?.[1]) result[match[1]] = match[2] ?? "";
  }
  return result;
}

/**
 * The host copy of the keys in service, written only after the guest accepted them, readable by the owner only:
 * all four in keys.env, and the publishable key alone in internal-pck, where the original's CLI reads it.
 */
export function saveKeys(paths: InstancePaths, secrets: Secrets): void {
  writeFileAtomic(paths.keys, formatEnv(secrets), 0o600);
  saveServedPublishableKey(paths, secrets[PUBLISHABLE_KEY_NAME] as string);
}

/** internal-pck: the internal project's publishable key the guest serves, even the public placeholder. */
export function saveServedPublishableKey(paths: InstancePaths, key: string): void {
  writeFileAtomic(paths.internalPck, key, 0o600);
}

export function forgetKeys(paths: InstancePaths): void {
  rmSync(paths.keys, { force: true });
  rmSync(paths.internalPck, { force: true });
}

const HEX_KEY = v.pipe(v.string(), v.regex(/^[0-9a-fA-F]{64}$/));

const keysSchema: v.GenericSchema<unknown, Secrets> = v.object(
  Object.fromEntries(SECRET_NAMES.map((name) => [name, HEX_KEY])),
);

/**
 * The keys in keys.env: all of them, each as the guest accepts it, or undefined. With `warn` (a start), a file that
 * does not read so is set aside; the start then rotates again, instead of handing out keys the guest refuses.
 */
export function loadKeys(path: string, warn?: Warn): Secrets | undefined {
  return readStateFile(path, keysSchema, { warn, parse: parseEnv });
}

/** The keys file, named only when the guest holds its keys (`rotated`) and the file reads as keys. */
export function keysFileInUse(path: string, rotation: string | undefined): string | undefined {
  return rotation === "rotated" && loadKeys(path) ? path : undefined;
}
