import { createHash } from "node:crypto";
import { buildIso } from "@stack/iso9660";
import { writeFileAtomic } from "./fs-atomic.js";
import { serviceUrl } from "./health.js";
import type { ForwardedService } from "./ports.js";

/** The runtime configuration the guest reads from its config disk: where each service is reachable from the host. */
export function runtimeConfig(services: ForwardedService[], instance: string): Record<string, string> {
  const config: Record<string, string> = { STACK_EMULATOR_INSTANCE: instance };
  for (const service of services) {
    config[`STACK_${service.name.toUpperCase().replaceAll("-", "_")}_URL`] = serviceUrl(service, "");
  }
  return config;
}

export function configHash(config: Record<string, string>): string {
  return createHash("sha256")
    .update(JSON.stringify(Object.entries(config).sort()))
    .digest("hex");
}

/** Writes the config ISO with the project's own writer: no host ISO tool is involved. */
export async function writeConfigDisk(
  path: string,
  volumeId: string,
  config: Record<string, string>,
): Promise<void> {
  const env = Object.entries(config)
    .map(([key, value]) => `${key}=${value}\n`)
    .join("");
  const iso = await buildIso([{ type: "file", path: "stack.env", content: env }], {
    volumeId,
    date: new Date(0),
  });
  writeFileAtomic(path, iso);
}
