import { existsSync, readFileSync, rmSync } from "node:fs";
import { basename, join } from "node:path";
import { type QmpClient, type SaveMethod, saveVmState } from "@stack/qmp";
import type { Context } from "./context.js";
import { writeFileAtomic } from "./fs-atomic.js";
import type { InstanceState, Rotation } from "./instance-state.js";
import { holdingAgent } from "./live-vm.js";
import type { InstancePaths } from "./paths.js";
import type { RamSpec } from "./qemu-args.js";
import type { Fingerprint } from "./snapshot.js";
import { commitStaging, createStaging } from "./staging.js";

/**
 * A `stop` saves the running state as a plain stream: a resumed guest's RAM is a private copy of the snapshot's
 * RAM file, so it must be written out whole (and `x-ignore-shared` only skips shared RAM).
 */
export const SUSPEND_METHOD: SaveMethod = "exec";

/** The state a `stop` saved: resumed by the next `start` with the same RAM layout and method. */
export interface SuspendRecord {
  fingerprint: Fingerprint;
  method: SaveMethod;
  ram: RamSpec;
  configHash: string;
  /** Whether the guest in the saved state holds this install's keys or still the public placeholders. */
  rotation: Rotation;
  savedAt: string;
}

export function readSuspend(paths: InstancePaths): SuspendRecord | undefined {
  try {
    if (!existsSync(paths.suspendState)) return undefined;
    return JSON.parse(readFileSync(paths.suspendRecord, "utf8"));
  } catch {
    return undefined;
  }
}

/** Once the disk moves on from a saved state, that state must never be resumed again. */
export function dropSuspend(paths: InstancePaths): void {
  rmSync(paths.suspend, { recursive: true, force: true });
}

/** Saves the paused guest of `state` with its record, both committed together or not at all. */
export async function saveSuspend(ctx: Context, qmp: QmpClient, state: InstanceState): Promise<void> {
  const { paths } = ctx;
  const staging = createStaging(paths.dir);
  try {
    await holdingAgent(ctx, { identity: state.qemu, qmp }, async () => {
      await qmp.stop();
      await saveVmState(qmp, {
        method: SUSPEND_METHOD,
        path: join(staging, basename(paths.suspendState)),
        timeoutMs: 120_000,
      });
    });
    const record: SuspendRecord = {
      fingerprint: state.suspendFingerprint,
      method: SUSPEND_METHOD,
      ram: state.ramFile ? { kind: "file", path: state.ramFile, share: false } : { kind: "anonymous" },
      configHash: state.configHash,
      rotation: state.rotation,
      savedAt: new Date().toISOString(),
    };
    writeFileAtomic(join(staging, basename(paths.suspendRecord)), `${JSON.stringify(record, null, 2)}\n`);
    commitStaging(staging, paths.suspend);
  } catch (error) {
    rmSync(staging, { recursive: true, force: true });
    throw error;
  }
}
