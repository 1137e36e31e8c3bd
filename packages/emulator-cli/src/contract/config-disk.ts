import { buildIso } from "@stack/iso9660";
import { EmulatorError } from "../core/errors.js";
import { writeFileAtomic } from "../core/fs-atomic.js";
import { CONFIG_VOLUME_ID } from "./contract.js";

/**
 * Every config disk has this size: a resumed guest keeps the disk capacity it saw when the snapshot was taken, so
 * a bigger replacement would be cut off. Readers stop at the volume's recorded size; the rest is zeros.
 */
export const CONFIG_DISK_BYTES = 1024 * 1024;

/** Writes the config ISO (volume STACKCFG) with the project's own writer: no host ISO tool is involved. */
export async function writeConfigDisk(path: string, files: Record<string, string>): Promise<void> {
  const iso = await buildIso(
    Object.entries(files).map(([name, content]) => ({ type: "file" as const, path: name, content })),
    { volumeId: CONFIG_VOLUME_ID, date: new Date(0) },
  );
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
