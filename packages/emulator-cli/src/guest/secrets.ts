import { randomBytes } from "node:crypto";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { PUBLISHABLE_KEY_NAME } from "../contract/contract.js";
import { writeFileAtomic } from "../core/fs-atomic.js";
import type { InstancePaths } from "../core/paths.js";

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

export function loadKeys(path: string): Secrets | undefined {
  try {
    return parseEnv(readFileSync(path, "utf8"));
  } catch {
    return undefined;
  }
}

/** The keys file, named only when the guest holds its keys (`rotated`) and the file is there to read. */
export function keysFileInUse(path: string, rotation: string | undefined): string | undefined {
  return rotation === "rotated" && existsSync(path) ? path : undefined;
}
