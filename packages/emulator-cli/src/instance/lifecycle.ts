import { existsSync, mkdirSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import type { SaveMethod } from "@stack/qmp";
import { type Context, msSince } from "../core/context.js";
import { EmulatorError } from "../core/errors.js";
import { acquireLock } from "../core/lock.js";
import { removeAbandonedStaging } from "../core/staging.js";
import { describeSelector } from "../image/image-store.js";
import { inspectInstanceDisk, setAsideInstanceDisk } from "../vm/disks.js";
import { removeRuntimeFiles, terminate, waitForExit } from "../vm/qemu-process.js";
import { Vm } from "../vm/vm.js";
import { bootByPlan, type Note, withAcceleratorFallback } from "./boot.js";
import { type BootInputs, fingerprint, prepareBoot, type StartOptions } from "./boot-inputs.js";
import { captureSnapshot } from "./capture.js";
import { type Inspection, inspectInstance } from "./inspect.js";
import { clearState, type InstanceState, writeState } from "./instance-state.js";
import { attachShare, detachShare } from "./share-attach.js";
import { stopShareSync } from "./share-sync.js";
import { saveSuspend, suspendMethod } from "./suspend.js";

export interface StartResult {
  alreadyRunning: boolean;
  state: InstanceState;
}

export interface StopResult {
  wasRunning: boolean;
  saved: boolean;
  warning?: string;
}

/** `save`: keep the running state for the next start; `powerdown`: shut the guest down; `discard`: just end it. */
export type StopMode = "save" | "powerdown" | "discard";

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

/**
 * The live instance, or undefined once what a gone one left is cleaned up: a state whose QEMU died, a QEMU of a
 * start that never finished (ended), staging directories of processes that are gone.
 */
async function liveOrCleaned(ctx: Context, inspection: Inspection): Promise<InstanceState | undefined> {
  if (inspection.state) return inspection.state;
  if (inspection.stale) {
    ctx.report.warn(`QEMU (pid ${inspection.stale.qemu.pid}) of the last start is gone; cleaning up`);
    clearState(ctx.paths);
  }
  if (inspection.orphan) await terminate(inspection.orphan);
  removeRuntimeFiles(ctx.paths);
  removeAbandonedStaging(ctx.layout.snapshots);
  removeAbandonedStaging(ctx.paths.dir);
  return undefined;
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
    const running = await liveOrCleaned(ctx, await inspectInstance(ctx));
    if (running) return { alreadyRunning: true, state: running };
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
    if (await liveOrCleaned(ctx, await inspectInstance(ctx))) {
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
    await withAcceleratorFallback(inputs, collectingNotes(ctx).note, (current: BootInputs) =>
      captureSnapshot(current, method),
    );
    return { method, snapshotDir: inputs.snapshot.dir };
  });
}

export async function stop(ctx: Context, mode: StopMode): Promise<StopResult> {
  if (!existsSync(ctx.paths.dir)) return { wasRunning: false, saved: false };
  return locked(ctx, "stop", () => stopLocked(ctx, mode));
}

/** Ends the instance without ceremony and deletes it (disk, saved state, keys); with `images`, images too. */
export async function reset(ctx: Context, options: { images: boolean }): Promise<StopResult> {
  const { paths, layout } = ctx;
  let result: StopResult = { wasRunning: false, saved: false };
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
    rmSync(paths.dir, { recursive: true, force: true });
  }
  rmSync(paths.socketDir, { recursive: true, force: true });
  if (options.images) {
    rmSync(layout.images, { recursive: true, force: true });
    rmSync(layout.snapshots, { recursive: true, force: true });
  }
  return result;
}

async function stopLocked(ctx: Context, mode: StopMode): Promise<StopResult> {
  const { paths, report } = ctx;
  const state = await liveOrCleaned(ctx, await inspectInstance(ctx));
  if (!state) return { wasRunning: false, saved: false };
  const vm = await Vm.attach(paths, state.qemu, { report, agentTimeoutMs: ctx.settings.timeouts.agentMs });
  if (!vm) report.warn("QEMU does not answer on its control socket; stopping it with signals");
  let saved = false;
  let warning: string | undefined;
  if (vm && mode === "save") {
    try {
      report.step("saving the running state");
      if (state.shareDevice) await detachShare(ctx);
      await saveSuspend(ctx, vm, state);
      saved = true;
    } catch (error) {
      warning = `could not save the running state (${(error as Error).message}); the next start boots from the disk`;
      report.warn(warning);
      await vm.qmp.cont().catch(() => undefined);
    }
  }
  if (vm && !saved && mode !== "discard") {
    report.step("powering down the guest");
    await vm.qmp.systemPowerdown().catch(() => undefined);
    await waitForExit(state.qemu, ctx.settings.timeouts.powerdownMs);
  }
  report.step("stopping QEMU");
  if (vm) await vm.end();
  else await terminate(state.qemu);
  await stopShareSync(paths);
  removeRuntimeFiles(paths);
  // Guest RAM is worth keeping only with the saved state that needs it.
  if (!saved) rmSync(paths.ram, { force: true });
  clearState(paths);
  return { wasRunning: true, saved, ...(warning ? { warning } : {}) };
}
