import { existsSync, rmSync, statSync } from "node:fs";
import { basename, join } from "node:path";
import type { SaveMethod } from "@stack/qmp";
import * as v from "valibot";
import type { Context } from "../core/context.js";
import { writeFileAtomic } from "../core/fs-atomic.js";
import type { InstancePaths } from "../core/paths.js";
import { commitStaging, createStaging } from "../core/staging.js";
import { readStateFile, type Warn } from "../core/state-file.js";
import { type RamSpec, ramSpecSchema } from "../vm/qemu-args.js";
import { type Fingerprint, fingerprintSchema } from "../vm/snapshot.js";
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
  /** The files the saved state goes with, as they were once QEMU let go of them (sealSuspend), by path. */
  seal?: Record<string, FileStamp>;
}

/** Enough of a file's identity to tell that it was written or replaced since. */
interface FileStamp {
  size: number;
  mtimeMs: number;
  ino: number;
}

function stampOf(path: string): FileStamp | undefined {
  try {
    const { size, mtimeMs, ino } = statSync(path);
    return { size, mtimeMs, ino };
  } catch {
    return undefined;
  }
}

/** The files a saved state must find as it left them: the instance disk, and its RAM file when that holds the RAM. */
function sealedFiles(paths: InstancePaths, record: SuspendRecord): string[] {
  return record.ram.kind === "file" && ramOutsideStream(record)
    ? [paths.disk, record.ram.path]
    : [paths.disk];
}

/**
 * Completes a saved state once its QEMU is gone: the disk (and RAM file) are stamped as they are now. A state is
 * resumed only over exactly these files: one whose stop did not get this far, or whose disk the guest has written
 * since (a stop that failed and let the guest run on), would pair the saved RAM with a disk it does not know.
 */
export function sealSuspend(paths: InstancePaths, record: SuspendRecord): void {
  const seal: Record<string, FileStamp> = {};
  for (const file of sealedFiles(paths, record)) {
    const stamp = stampOf(file);
    if (stamp) seal[file] = stamp;
  }
  writeFileAtomic(paths.suspendRecord, `${JSON.stringify({ ...record, seal }, null, 2)}\n`);
}

/** Why a saved state cannot go with the files it would resume over; undefined when it can. */
export function sealProblem(paths: InstancePaths, record: SuspendRecord): string | undefined {
  if (!record.seal) return "its stop did not finish";
  for (const file of sealedFiles(paths, record)) {
    const sealed = record.seal[file];
    const now = stampOf(file);
    if (!sealed || !now) return `${file} is not the file it was saved with`;
    if (sealed.ino !== now.ino || sealed.size !== now.size || sealed.mtimeMs !== now.mtimeMs) {
      return `${file} was written after the state was saved`;
    }
  }
  return undefined;
}

/** Whether the saved guest's RAM is in a file rather than in the stream: then that file must still be there. */
export function ramOutsideStream(record: SuspendRecord): boolean {
  return record.method === "x-ignore-shared";
}

const fileStampSchema = v.object({ size: v.number(), mtimeMs: v.number(), ino: v.number() });

const suspendRecordSchema: v.GenericSchema<unknown, SuspendRecord> = v.object({
  fingerprint: fingerprintSchema,
  method: v.picklist([
    "x-ignore-shared",
    "mapped-ram",
    "file",
    "exec",
  ] as const satisfies readonly SaveMethod[]),
  ram: ramSpecSchema,
  configHash: v.string(),
  rotation: v.picklist(["rotated", "skipped"]),
  shareDevice: v.optional(v.boolean()),
  savedAt: v.string(),
  seal: v.optional(v.record(v.string(), fileStampSchema)),
});

/**
 * The state a `stop` saved, if complete; with `warn`, a record that does not read is set aside with its state (the
 * instance then boots from its disk).
 */
export function readSuspend(paths: InstancePaths, warn?: Warn): SuspendRecord | undefined {
  if (!existsSync(paths.suspendState)) return undefined;
  // Set aside beside the instance's files: the rest of an unreadable saved state goes.
  const aside = join(paths.dir, "suspend.json.unreadable");
  const record = readStateFile(paths.suspendRecord, suspendRecordSchema, { warn, aside });
  if (!record && warn) dropSuspend(paths);
  return record;
}

/** Once the disk moves on from a saved state, that state must never be resumed again. */
export function dropSuspend(paths: InstancePaths): void {
  rmSync(paths.suspend, { recursive: true, force: true });
}

/**
 * Saves the guest of `state` with its record, both committed together or not at all; the record is sealed once QEMU
 * has exited (sealSuspend). Whatever an earlier, unfinished stop left goes first: the guest has run since.
 */
export async function saveSuspend(ctx: Context, vm: Vm, state: InstanceState): Promise<SuspendRecord> {
  dropSuspend(ctx.paths);
  const { paths } = ctx;
  const staging = createStaging(paths.dir);
  const ram = runningRam(state);
  const method = suspendMethod(ram);
  try {
    await vm.save(method, join(staging, basename(paths.suspendState)));
    const record: SuspendRecord = {
      fingerprint: state.suspendFingerprint,
      method,
      // Every RAM is the same named backend (qemu-args), so a stream of any of them loads into the instance's file;
      // a state saved beside its shared RAM file holds no RAM and resumes only over that file.
      ram: method === "x-ignore-shared" ? ram : (state.resumeRam ?? ram),
      configHash: state.configHash,
      rotation: state.rotation,
      ...(state.shareDevice ? { shareDevice: true } : {}),
      savedAt: new Date().toISOString(),
    };
    writeFileAtomic(join(staging, basename(paths.suspendRecord)), `${JSON.stringify(record, null, 2)}\n`);
    commitStaging(staging, paths.suspend);
    ctx.report.mark("suspend committed");
    return record;
  } catch (error) {
    rmSync(staging, { recursive: true, force: true });
    throw error;
  }
}
