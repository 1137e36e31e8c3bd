import { readFileSync, rmSync } from "node:fs";
import { writeFileAtomic } from "../core/fs-atomic.js";
import type { InstancePaths } from "../core/paths.js";
import type { ForwardedService } from "../core/ports.js";
import type { ProcessIdentity } from "../core/process-identity.js";
import type { RamSpec } from "../vm/qemu-args.js";
import type { Fingerprint } from "../vm/snapshot.js";

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

export function readState(paths: InstancePaths): InstanceState | undefined {
  try {
    const state = JSON.parse(readFileSync(paths.state, "utf8"));
    return state?.version === 1 ? state : undefined;
  } catch {
    return undefined;
  }
}

export function writeState(paths: InstancePaths, state: InstanceState): void {
  writeFileAtomic(paths.state, `${JSON.stringify(state, null, 2)}\n`);
}

export function clearState(paths: InstancePaths): void {
  rmSync(paths.state, { force: true });
}
