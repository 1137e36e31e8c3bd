import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import type { QmpClient, SaveMethod } from "@stack/qmp";
import { type Context, msSince, timeoutMsFromEnv } from "../core/context.js";
import { EmulatorError } from "../core/errors.js";
import { acquireLock } from "../core/lock.js";
import type { InstancePaths } from "../core/paths.js";
import { commandLine, identify, isSameProcess, type ProcessIdentity } from "../core/process-identity.js";
import { removeAbandonedStaging } from "../core/staging.js";
import { addSharedFile, plugShare, readShareRecord, stageShare, unmountShare } from "../guest/share.js";
import { describeSelector } from "../image/image-store.js";
import { inspectInstanceDisk, setAsideInstanceDisk } from "../vm/disks.js";
import { connectAgent } from "../vm/live-vm.js";
import { connectQmp, removeRuntimeFiles, terminate, waitForExit } from "../vm/vm.js";
import { bootByPlan, type Note, withAcceleratorFallback } from "./boot.js";
import { type BootInputs, fingerprint, prepareBoot, type StartOptions } from "./boot-inputs.js";
import { captureSnapshot } from "./capture.js";
import { clearState, type InstanceState, readState, writeState } from "./instance-state.js";
import { startShareSync, stopShareSync } from "./share-sync.js";
import { saveSuspend, suspendMethod } from "./suspend.js";

export type { StartOptions } from "./boot-inputs.js";

export interface StartResult {
  alreadyRunning: boolean;
  state: InstanceState;
}

/** Kills a QEMU we launched whose start never completed (pid file present, no state). */
async function recoverOrphan(paths: InstancePaths): Promise<void> {
  let pid: number;
  try {
    pid = Number.parseInt(readFileSync(paths.pidFile, "utf8"), 10);
  } catch {
    return;
  }
  const identity = identify(pid);
  // The pid file may be stale and its pid reused: only a process started with our pid file is ours to kill.
  if (identity && commandLine(pid).includes(paths.pidFile)) await terminate(identity);
  removeRuntimeFiles(paths);
}

/** Runs `fn` holding the instance lock, with the instance directory in place and the log file attached. */
async function locked<T>(ctx: Context, purpose: string, fn: () => Promise<T>): Promise<T> {
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

/** The running instance, or undefined after cleaning up what a vanished one left behind. */
function liveState(ctx: Context): InstanceState | undefined {
  const existing = readState(ctx.paths);
  if (existing && isSameProcess(existing.qemu)) return existing;
  if (existing) {
    ctx.report.warn(`QEMU (pid ${existing.qemu.pid}) of the last start is gone; cleaning up`);
    clearState(ctx.paths);
  }
  return undefined;
}

/** What a crashed command left: an orphaned QEMU, staging directories of processes that are gone. */
async function recoverLeftovers(ctx: Context): Promise<void> {
  await recoverOrphan(ctx.paths);
  removeAbandonedStaging(ctx.layout.snapshots);
  removeAbandonedStaging(ctx.paths.dir);
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

/**
 * Shares this instance's config files with its running guest (docs/guest-contract.md, section 6): staged, the 9p
 * device plugged in unless it is there already, mounted at /host, kept in sync by share-sync. Returns whether the
 * device is in the VM now.
 */
async function attachShare(
  ctx: Context,
  qmp: QmpClient,
  qemu: ProcessIdentity,
  devicePresent: boolean,
): Promise<boolean> {
  const record = readShareRecord(ctx.paths);
  if (record.files.length === 0) return devicePresent;
  for (const missing of stageShare(ctx.paths, record)) {
    ctx.report.warn(`config file ${missing} is gone: the guest no longer sees it`);
  }
  const qga = await connectAgent(ctx);
  try {
    await plugShare(qmp, qga, devicePresent);
  } finally {
    await qga.close().catch(() => undefined);
  }
  startShareSync(ctx.paths, ctx.name, qemu, ctx.env);
  ctx.report.mark("config files shared");
  return true;
}

/** Shares a config file with the running instance, so that its backend finds it at /host<path>. */
export async function shareConfigFile(ctx: Context, file: string): Promise<void> {
  await locked(ctx, "share", async () => {
    const state = liveState(ctx);
    if (!state) {
      throw new EmulatorError("NOT_RUNNING", `the emulator instance ${ctx.name} is not running`);
    }
    addSharedFile(ctx.paths, file);
    const qmp = await connectQmp(ctx.paths, 5000);
    try {
      const plugged = await attachShare(ctx, qmp, state.qemu, Boolean(state.shareDevice));
      if (plugged !== state.shareDevice) writeState(ctx.paths, { ...state, shareDevice: plugged });
    } finally {
      await qmp.close().catch(() => undefined);
    }
  });
}

export async function start(ctx: Context, options: StartOptions): Promise<StartResult> {
  return locked(ctx, "start", async () => {
    const started = Date.now();
    const running = liveState(ctx);
    if (running) return { alreadyRunning: true, state: running };
    await recoverLeftovers(ctx);
    const { note, reasons } = collectingNotes(ctx);
    const { result: outcome, inputs } = await bootByPlan(await prepareBoot(ctx, options), note);
    const { paths } = ctx;
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
      qemu: {
        ...outcome.vm.identity,
        binary: resolved.machine.qemu,
        version: resolved.abilities.version.text,
      },
      accel: resolved.machine.accel,
      services: inputs.services,
      boot: outcome.boot,
      rotation: outcome.rotation,
      configHash: inputs.configHash,
      startedAt: new Date().toISOString(),
      readyMs: msSince(started),
      socketDir: paths.socketDir,
      suspendFingerprint: fingerprint(inputs, suspendMethod(outcome.ram)),
      ram: outcome.ram,
      resumeRam: inputs.ownRam,
      ...(outcome.method ? { snapshotMethod: outcome.method } : {}),
      ...(reasons.length ? { fallbackReason: reasons.join("; ") } : {}),
    };
    try {
      if (await attachShare(ctx, outcome.vm.qmp, outcome.vm.identity, Boolean(outcome.shareDevice))) {
        state.shareDevice = true;
      }
    } catch (error) {
      // The emulator works without it; only config files' projects need it.
      note(`the config files could not be shared with the guest (${(error as Error).message})`);
      state.fallbackReason = reasons.join("; ");
    }
    writeState(paths, state);
    await outcome.vm.qmp.close().catch(() => undefined);
    return { alreadyRunning: false, state };
  });
}

/** Captures the image's snapshot on demand: a cold boot that ends in a snapshot and no running VM. */
export async function capture(
  ctx: Context,
  options: StartOptions,
): Promise<{ method: SaveMethod; snapshotDir: string }> {
  return locked(ctx, "capture", async () => {
    if (liveState(ctx)) {
      throw new EmulatorError(
        "RUNNING",
        "the emulator is running on the ports a capture needs",
        "stop it first: stack-emulator stop",
      );
    }
    await recoverLeftovers(ctx);
    const inputs = await prepareBoot(ctx, { ...options, noSnapshot: false });
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

export interface StopResult {
  wasRunning: boolean;
  saved: boolean;
  warning?: string;
}

/** `save`: keep the running state for the next start; `powerdown`: shut the guest down; `discard`: just end it. */
export type StopMode = "save" | "powerdown" | "discard";

export async function stop(ctx: Context, options: { mode: StopMode }): Promise<StopResult> {
  if (!existsSync(ctx.paths.dir)) return { wasRunning: false, saved: false };
  return locked(ctx, "stop", () => stopLocked(ctx, options.mode));
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
  const { paths, report, env } = ctx;
  const state = readState(paths);
  if (!state || !isSameProcess(state.qemu)) {
    await recoverOrphan(paths);
    clearState(paths);
    return { wasRunning: false, saved: false };
  }
  let qmp: QmpClient | undefined;
  try {
    qmp = await connectQmp(paths, 5000);
  } catch {
    report.warn("QEMU does not answer on its control socket; stopping it with signals");
  }
  let saved = false;
  let warning: string | undefined;
  if (qmp && mode === "save") {
    try {
      report.step("saving the running state");
      if (state.shareDevice) {
        // QEMU refuses to save while a 9p export is mounted; the device stays, recorded with the state.
        const qga = await connectAgent(ctx, 5000);
        try {
          await unmountShare(qga);
        } finally {
          await qga.close().catch(() => undefined);
        }
        await stopShareSync(paths);
      }
      await saveSuspend(ctx, qmp, state);
      saved = true;
    } catch (error) {
      warning = `could not save the running state (${(error as Error).message}); the next start boots from the disk`;
      report.warn(warning);
      await qmp.cont().catch(() => undefined);
    }
  }
  if (qmp && !saved && mode !== "discard") {
    report.step("powering down the guest");
    await qmp.systemPowerdown().catch(() => undefined);
    await waitForExit(state.qemu, timeoutMsFromEnv(env, "STACK_EMULATOR_POWERDOWN_TIMEOUT", 10_000));
  }
  report.step("stopping QEMU");
  await terminate(state.qemu, qmp);
  await stopShareSync(paths);
  removeRuntimeFiles(paths);
  // Guest RAM is worth keeping only with the saved state that needs it.
  if (!saved) rmSync(paths.ram, { force: true });
  clearState(paths);
  return { wasRunning: true, saved, ...(warning ? { warning } : {}) };
}
