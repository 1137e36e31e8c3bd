import { existsSync, mkdirSync, readdirSync, rmdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import type { SaveMethod } from "@stack/qmp";
import { type Context, createContext, msSince } from "../core/context.js";
import { EmulatorError } from "../core/errors.js";
import { acquireLock } from "../core/lock.js";
import { describeSelector } from "../image/image-store.js";
import { inspectInstanceDisk, setAsideInstanceDisk } from "../vm/disks.js";
import { checkNotInterrupted } from "../vm/owned.js";
import { bootByPlan, type Note, withAcceleratorFallback } from "./boot.js";
import { type BootInputs, fingerprint, prepareBoot, type StartOptions } from "./boot-inputs.js";
import { captureSnapshot } from "./capture.js";
import { inspectInstance } from "./inspect.js";
import { type InstanceState, writeState } from "./instance-state.js";
import { recoverRunning } from "./recover.js";
import { attachShare } from "./share-attach.js";
import { liveOrCleaned, type StopMode, type StopResult, stopRunning } from "./stop.js";
import { filesInUse, type Kept, removeImagesAndSnapshots, removeUnusedSnapshots } from "./store.js";
import { suspendMethod } from "./suspend.js";

export type { StopMode, StopResult };

export interface StartResult {
  alreadyRunning: boolean;
  state: InstanceState;
}

/** Runs `fn` holding the instance lock, with the instance directory in place and the log file attached. */
export async function locked<T>(ctx: Context, purpose: string, fn: () => Promise<T>): Promise<T> {
  mkdirSync(ctx.paths.dir, { recursive: true, mode: 0o700 });
  ctx.report.logTo(ctx.paths.cliLog);
  const lock = acquireLock(ctx.paths.lock, purpose);
  try {
    return await fn();
  } finally {
    lock.release();
    ctx.report.done();
  }
}

/** A note that is printed as a warning and collected for the instance state. */
function collectingNotes(ctx: Context): { note: Note; reasons: string[] } {
  const reasons: string[] = [];
  return {
    reasons,
    note: (why) => {
      reasons.push(why);
      ctx.report.warn(why);
    },
  };
}

export async function start(ctx: Context, options: StartOptions): Promise<StartResult> {
  return locked(ctx, "start", async () => {
    const started = Date.now();
    const inspection = await inspectInstance(ctx, { probe: true, repair: true });
    const serving = inspection.state && (await recoverRunning(ctx, inspection));
    if (serving) return { alreadyRunning: true, state: serving };
    await liveOrCleaned(ctx, await inspectInstance(ctx, { repair: true }));
    const { note, reasons } = collectingNotes(ctx);
    const { result: outcome, inputs } = await bootByPlan(await prepareBoot(ctx, options), note);
    const { vm } = outcome;
    try {
      const { image, resolved } = inputs;
      const state: InstanceState = {
        version: 1,
        name: ctx.name,
        image: {
          selector: describeSelector(options.selector),
          name: image.manifest.name,
          dir: image.dir,
          digest: image.manifest.digest,
        },
        qemu: { ...vm.identity, binary: resolved.machine.qemu, version: resolved.abilities.version.text },
        accel: resolved.machine.accel,
        services: inputs.services,
        boot: outcome.boot,
        rotation: outcome.rotation,
        configHash: inputs.configHash,
        startedAt: new Date().toISOString(),
        readyMs: msSince(started),
        socketDir: ctx.paths.socketDir,
        suspendFingerprint: fingerprint(inputs, suspendMethod(outcome.ram)),
        ram: outcome.ram,
        memoryMiB: image.manifest.memoryMiB,
        resumeRam: inputs.ownRam,
        ...(outcome.method ? { snapshotMethod: outcome.method } : {}),
      };
      try {
        if (await attachShare(ctx, vm.qmp, vm.identity, Boolean(outcome.shareDevice)))
          state.shareDevice = true;
      } catch (error) {
        // The emulator works without it; only config files' projects need it.
        note(`the config files could not be shared with the guest (${(error as Error).message})`);
      }
      if (reasons.length) state.fallbackReason = reasons.join("; ");
      // The handover: the guest holds this install's keys (or EMULATOR_NO_ROTATION said to keep the placeholders).
      await vm.publish(inputs.services);
      state.services = [...vm.forwards];
      // An interrupt is ending this VM: it must not be recorded, nor said to be ready.
      checkNotInterrupted();
      writeState(ctx.paths, state);
      await vm.release();
      return { alreadyRunning: false, state };
    } catch (error) {
      await vm.end();
      throw error;
    }
  });
}

/** Captures the image's snapshot on demand: a cold boot that ends in a snapshot and no running VM. */
export async function capture(
  ctx: Context,
  options: StartOptions,
): Promise<{ method: SaveMethod; snapshotDir: string }> {
  return locked(ctx, "capture", async () => {
    if (await liveOrCleaned(ctx, await inspectInstance(ctx, { repair: true }))) {
      throw new EmulatorError(
        "RUNNING",
        "the emulator is running on the ports a capture needs",
        "stop it first: stack-emulator stop",
      );
    }
    const inputs = await prepareBoot({ ...ctx, settings: { ...ctx.settings, noSnapshot: false } }, options);
    const disk = inspectInstanceDisk(ctx.paths, inputs.image.manifest.digest);
    if (disk.kind === "ours") {
      throw new EmulatorError(
        "INSTANCE_HAS_DATA",
        "this instance's disk builds on the current snapshot; recapturing would pull it out from under the data",
        "`stack-emulator reset` first (it deletes this instance's data), or capture for another --instance",
      );
    }
    if (disk.kind === "foreign") setAsideInstanceDisk(ctx.paths);
    const method = inputs.method as SaveMethod;
    const { result: captured } = await withAcceleratorFallback(
      inputs,
      collectingNotes(ctx).note,
      (current: BootInputs) => captureSnapshot(current, method),
    );
    return { method, snapshotDir: captured.dir };
  });
}

export async function stop(ctx: Context, mode: StopMode): Promise<StopResult> {
  if (!existsSync(ctx.paths.dir)) return { wasRunning: false, saved: false };
  return locked(ctx, "stop", () => stopLocked(ctx, mode));
}

export interface ResetResult {
  /** There was an instance of this name to delete. */
  existed: boolean;
  wasRunning: boolean;
  /** With `images`: the images and snapshots other instances use, kept. */
  kept?: Kept[];
  /** With `images` and `force`: the other instances deleted because they used them. */
  alsoReset?: string[];
}

/** Ends the instance without ceremony and deletes it (disk, saved state, keys); the snapshots it alone used go too. */
async function deleteInstance(ctx: Context): Promise<StopResult | undefined> {
  const { paths } = ctx;
  let result: StopResult | undefined;
  if (existsSync(paths.dir)) {
    result = await locked(ctx, "reset", async () => {
      const stopped = await stopLocked(ctx, "discard");
      // Everything but the lock goes while the lock is held; the lock itself goes when it is released.
      for (const entry of readdirSync(paths.dir)) {
        if (join(paths.dir, entry) !== paths.lock)
          rmSync(join(paths.dir, entry), { recursive: true, force: true });
      }
      return stopped;
    });
    // Not recursive: what a command that took the lock since has made is its own.
    try {
      rmdirSync(paths.dir);
    } catch {}
  }
  rmSync(paths.socketDir, { recursive: true, force: true });
  return result;
}

/**
 * Deletes the instance. With `images`, also every image and snapshot no other instance uses; those another one
 * uses are kept and listed, unless `force` says to delete those instances too.
 */
export async function reset(
  ctx: Context,
  options: { images: boolean; force?: boolean },
): Promise<ResetResult> {
  const deleted = await deleteInstance(ctx);
  const result: ResetResult = { existed: deleted !== undefined, wasRunning: deleted?.wasRunning ?? false };
  if (!options.images) {
    await removeUnusedSnapshots(ctx);
    return result;
  }
  if (options.force) {
    const users = [...new Set([...filesInUse(ctx.layout, ctx.name).values()].flat())].sort();
    for (const name of users) {
      ctx.report.warn(`deleting instance ${name}, which uses an image or snapshot (--force)`);
      await deleteInstance(createContext(ctx.settings, ctx.report, name));
    }
    result.alsoReset = users;
  }
  result.kept = await removeImagesAndSnapshots(ctx);
  return result;
}

async function stopLocked(ctx: Context, mode: StopMode): Promise<StopResult> {
  const state = await liveOrCleaned(ctx, await inspectInstance(ctx, { repair: true }));
  return state ? stopRunning(ctx, state, mode) : { wasRunning: false, saved: false };
}
