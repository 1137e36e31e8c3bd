import { rmSync } from "node:fs";
import * as v from "valibot";
import { writeFileAtomic } from "../core/fs-atomic.js";
import type { InstancePaths } from "../core/paths.js";
import { type ForwardedService, forwardedServiceSchema } from "../core/ports.js";
import { type ProcessIdentity, processIdentityEntries } from "../core/process-identity.js";
import { readStateFile, type Warn } from "../core/state-file.js";
import { type RamSpec, ramSpecSchema } from "../vm/qemu-args.js";
import { type Fingerprint, fingerprintSchema } from "../vm/snapshot.js";

export type BootKind = "cold" | "snapshot" | "quick-boot";

import type { Rotation } from "../guest/secrets.js";

export type { Rotation };

/** What a running instance is, written once it is healthy; `status` and `stop` read it. */
export interface InstanceState {
  version: 1;
  name: string;
  image: { selector: string; name: string; dir: string; digest: string };
  qemu: ProcessIdentity & { binary: string; version: string };
  accel: string;
  services: ForwardedService[];
  boot: BootKind;
  snapshotMethod?: string;
  /** What a state saved by `stop` depends on; the next start compares it with the host's. */
  suspendFingerprint: Fingerprint;
  fallbackReason?: string;
  rotation: Rotation;
  configHash: string;
  /** The guest's RAM size: what a stop may have to write. */
  memoryMiB?: number;
  /** The RAM this VM runs with: a stop saves it whole unless it is the instance's own shared file. */
  ram?: RamSpec;
  /** The RAM a quick-boot of this instance's saved state resumes into. */
  resumeRam?: RamSpec;
  /** Before `ram`: the private RAM file a snapshot resume ran with. */
  ramFile?: string;
  /** The config-file share's 9p device is plugged into the VM. */
  shareDevice?: boolean;
  startedAt: string;
  readyMs: number;
  socketDir: string;
}

const stateSchema: v.GenericSchema<unknown, InstanceState> = v.object({
  version: v.literal(1),
  name: v.string(),
  image: v.object({ selector: v.string(), name: v.string(), dir: v.string(), digest: v.string() }),
  qemu: v.object({ ...processIdentityEntries, binary: v.string(), version: v.string() }),
  accel: v.string(),
  services: v.array(forwardedServiceSchema),
  boot: v.picklist(["cold", "snapshot", "quick-boot"]),
  snapshotMethod: v.optional(v.string()),
  suspendFingerprint: fingerprintSchema,
  fallbackReason: v.optional(v.string()),
  rotation: v.picklist(["rotated", "skipped"]),
  configHash: v.string(),
  memoryMiB: v.optional(v.number()),
  ram: v.optional(ramSpecSchema),
  resumeRam: v.optional(ramSpecSchema),
  ramFile: v.optional(v.string()),
  shareDevice: v.optional(v.boolean()),
  startedAt: v.string(),
  readyMs: v.number(),
  socketDir: v.string(),
});

/** The recorded state; `warn` sets an unreadable one aside (see readStateFile), for a command holding the lock. */
export function readState(paths: InstancePaths, warn?: Warn): InstanceState | undefined {
  return readStateFile(paths.state, stateSchema, { warn });
}

export function writeState(paths: InstancePaths, state: InstanceState): void {
  writeFileAtomic(paths.state, `${JSON.stringify(state, null, 2)}\n`);
}

export function clearState(paths: InstancePaths): void {
  rmSync(paths.state, { force: true });
}
