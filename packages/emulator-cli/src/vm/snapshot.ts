import { createReadStream, createWriteStream, existsSync, statSync } from "node:fs";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import * as v from "valibot";
import { writeFileAtomic } from "../core/fs-atomic.js";
import { readStateFile } from "../core/state-file.js";
import { loadZstd } from "../core/zstd.js";
import { CPU_MODEL, type MachineSpec, machineType } from "../host/machine.js";
import type { Image } from "../image/image.js";
import { DEVICE_LAYOUT_VERSION } from "./qemu-args.js";

/** Everything a saved VM state silently depends on: any difference means it cannot be resumed. */
export interface Fingerprint {
  qemuBinary: string;
  qemuVersion: string;
  accel: string;
  cpu: string;
  machine: string;
  memoryMiB: number;
  cpus: number;
  deviceLayout: number;
  imageDigest: string;
  method: string;
  /** The guest listens on `${portPrefix}01`... from boot on. */
  portPrefix: string;
}

/**
 * A fingerprint as an earlier version may have recorded it: any fields, compared key by key with the current one
 * (fingerprintDifferences), so that one recorded before a field existed reads as a difference, not as garbage.
 */
export const fingerprintSchema = v.custom<Fingerprint>(
  (value) =>
    typeof value === "object" &&
    value !== null &&
    Object.values(value).every((field) => typeof field === "string" || typeof field === "number"),
  "a fingerprint is an object of strings and numbers",
);

export interface SnapshotManifest {
  fingerprint: Fingerprint;
  createdAt: string;
  /** Hash of the runtime config the guest saw at capture; another config is re-applied after a resume. */
  configHash: string;
  stateBytes: number;
  /** 0 when guest RAM is inside the (compressed) state stream rather than in a RAM file. */
  ramBytes: number;
  /** The state is a zstd-compressed migration stream (`state.zst`), the fallback without a RAM file. */
  compressed: boolean;
  captureMs: number;
}

const byteCount = v.pipe(v.number(), v.integer(), v.minValue(0));

const snapshotManifestSchema: v.GenericSchema<unknown, SnapshotManifest> = v.object({
  fingerprint: fingerprintSchema,
  createdAt: v.string(),
  configHash: v.string(),
  stateBytes: byteCount,
  ramBytes: byteCount,
  compressed: v.boolean(),
  captureMs: v.number(),
});

export interface SnapshotFiles {
  dir: string;
  ram: string;
  state: string;
  compressedState: string;
  disk: string;
  /** An empty overlay on `disk`, copied for every resume: a copy takes far less time than running qemu-img. */
  overlayTemplate: string;
  manifest: string;
}

export function fingerprintOf(
  machine: MachineSpec,
  qemuVersion: string,
  image: Image,
  method: string,
  portPrefix: string,
): Fingerprint {
  return {
    qemuBinary: machine.qemu,
    qemuVersion,
    accel: machine.accel,
    cpu: CPU_MODEL,
    machine: machineType(machine.arch),
    memoryMiB: image.manifest.memoryMiB,
    cpus: image.manifest.cpus,
    deviceLayout: DEVICE_LAYOUT_VERSION,
    imageDigest: image.manifest.digest,
    method,
    portPrefix,
  };
}

/** Human-readable differences between a stored and a current fingerprint; empty when they match. */
export function fingerprintDifferences(stored: Fingerprint, current: Fingerprint): string[] {
  return (Object.keys(current) as (keyof Fingerprint)[])
    .filter((key) => stored[key] !== current[key])
    .map((key) => `${key} ${String(stored[key])} -> ${String(current[key])}`);
}

export function snapshotFiles(dir: string): SnapshotFiles {
  return {
    dir,
    ram: join(dir, "ram"),
    state: join(dir, "state"),
    compressedState: join(dir, "state.zst"),
    disk: join(dir, "disk.qcow2"),
    overlayTemplate: join(dir, "overlay.qcow2"),
    manifest: join(dir, "snapshot.json"),
  };
}

/** A snapshot whose files are all present and whose sizes match its manifest, or the reason it is unusable. */
export function readSnapshot(files: SnapshotFiles): { manifest?: SnapshotManifest; problem?: string } {
  if (!existsSync(files.manifest)) return { problem: "no snapshot" };
  // Not set aside when unreadable: the next capture writes a new generation, manifest included.
  const manifest = readStateFile(files.manifest, snapshotManifestSchema);
  if (!manifest) return { problem: "snapshot manifest is unreadable" };
  for (const [file, bytes] of [
    [manifest.compressed ? files.compressedState : files.state, manifest.stateBytes],
    [files.ram, manifest.ramBytes],
  ] as const) {
    if (bytes === 0) continue;
    let size = -1;
    try {
      size = statSync(file).size;
    } catch {
      return { problem: `snapshot file ${file} is missing` };
    }
    if (size !== bytes) return { problem: `snapshot file ${file} has ${size} bytes, expected ${bytes}` };
  }
  if (!existsSync(files.disk)) return { problem: `snapshot disk ${files.disk} is missing` };
  return { manifest };
}

export function writeSnapshotManifest(files: SnapshotFiles, manifest: SnapshotManifest): void {
  writeFileAtomic(files.manifest, `${JSON.stringify(manifest, null, 2)}\n`);
}

/** Compresses a migration stream with zstd (level 3: about as fast as the disk, a fraction of the size). */
export async function compressState(raw: string, compressed: string): Promise<void> {
  const { CompressStream } = await loadZstd("saving a snapshot as a compressed migration stream");
  await pipeline(
    createReadStream(raw),
    new CompressStream({ compressionLevel: 3 }),
    createWriteStream(compressed),
  );
}

export async function decompressState(compressed: string, raw: string): Promise<void> {
  const { DecompressStream } = await loadZstd("resuming a snapshot saved as a compressed migration stream");
  await pipeline(createReadStream(compressed), new DecompressStream(), createWriteStream(raw));
}
