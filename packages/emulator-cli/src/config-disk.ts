import { createHash } from "node:crypto";
import { buildIso } from "@stack/iso9660";
import { EmulatorError } from "./errors.js";
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

/**
 * Every config disk has this size: a resumed guest keeps the disk capacity it saw when the snapshot was taken, so
 * a bigger replacement would be cut off. Readers stop at the volume's recorded size; the rest is zeros.
 */
export const CONFIG_DISK_BYTES = 1024 * 1024;

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
  if (iso.length > CONFIG_DISK_BYTES) {
    throw new EmulatorError(
      "CONFIG_TOO_LARGE",
      `the runtime config needs ${iso.length} bytes, more than the config disk's ${CONFIG_DISK_BYTES}`,
    );
  }
  const disk = Buffer.alloc(CONFIG_DISK_BYTES);
  iso.copy(disk);
  writeFileAtomic(path, disk);
}
