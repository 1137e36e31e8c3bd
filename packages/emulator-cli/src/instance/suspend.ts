import { existsSync, readFileSync, rmSync } from "node:fs";
import { basename, join } from "node:path";
import type { SaveMethod } from "@stack/qmp";
import type { Context } from "../core/context.js";
import { writeFileAtomic } from "../core/fs-atomic.js";
import type { InstancePaths } from "../core/paths.js";
import { commitStaging, createStaging } from "../core/staging.js";
import type { RamSpec } from "../vm/qemu-args.js";
import type { Fingerprint } from "../vm/snapshot.js";
import type { Vm } from "../vm/vm.js";
import type { InstanceState, Rotation } from "./instance-state.js";

/**
 * How a `stop` saves a VM running with `ram`: RAM in the instance's own shared file stays there and only device state
 * is written (`x-ignore-shared`); any other RAM (a private copy of the snapshot's RAM file, anonymous RAM) goes into
 * a plain stream, whole. A quick-boot of such a stream loads it into the instance's own file, so only the first
 * stop after a boot or a snapshot resume pays for the RAM size.
 */
export function suspendMethod(ram: RamSpec): SaveMethod {
  return ram.kind === "file" && ram.share ? "x-ignore-shared" : "exec";
}

/** The RAM of a state a stop saved: what it was running with, for states recorded before `ram` existed. */
function runningRam(state: InstanceState): RamSpec {
  if (state.ram) return state.ram;
  return state.ramFile ? { kind: "file", path: state.ramFile, share: false } : { kind: "anonymous" };
}

/** The state a `stop` saved: resumed by the next `start` with the same RAM layout and method. */
export interface SuspendRecord {
  fingerprint: Fingerprint;
  method: SaveMethod;
  ram: RamSpec;
  configHash: string;
  /** Whether the guest in the saved state holds this install's keys or still the public placeholders. */
  rotation: Rotation;
  /** The config-file share's 9p device was plugged in (unmounted) when saved: the resume needs it too. */
  shareDevice?: boolean;
  savedAt: string;
}

/** Whether the saved guest's RAM is in a file rather than in the stream: then that file must still be there. */
export function ramOutsideStream(record: SuspendRecord): boolean {
  return record.method === "x-ignore-shared";
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

/** Saves the guest of `state` with its record, both committed together or not at all. */
export async function saveSuspend(ctx: Context, vm: Vm, state: InstanceState): Promise<void> {
  const { paths } = ctx;
  const staging = createStaging(paths.dir);
  const ram = runningRam(state);
  const method = suspendMethod(ram);
  try {
    await vm.save(method, join(staging, basename(paths.suspendState)));
    const record: SuspendRecord = {
      fingerprint: state.suspendFingerprint,
      method,
      // Every RAM is the same named backend (qemu-args), so a stream of any of them loads into the instance's file.
      ram: state.resumeRam ?? ram,
      configHash: state.configHash,
      rotation: state.rotation,
      ...(state.shareDevice ? { shareDevice: true } : {}),
      savedAt: new Date().toISOString(),
    };
    writeFileAtomic(join(staging, basename(paths.suspendRecord)), `${JSON.stringify(record, null, 2)}\n`);
    commitStaging(staging, paths.suspend);
  } catch (error) {
    rmSync(staging, { recursive: true, force: true });
    throw error;
  }
}
