import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { writeFileAtomic } from "./fs-atomic.js";

export type Secrets = Record<string, string>;

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

/** The host copy of the keys in service: written only after the guest accepted them, readable by the owner only. */
export function saveKeys(path: string, secrets: Secrets): void {
  writeFileAtomic(path, formatEnv(secrets), 0o600);
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
