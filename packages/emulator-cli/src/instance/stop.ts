import { rmSync } from "node:fs";
import type { Context } from "../core/context.js";
import { requireFreeSpace } from "../core/disk-space.js";
import { EmulatorError } from "../core/errors.js";
import { removeAbandonedStaging } from "../core/staging.js";
import { removeRuntimeFiles, terminate, waitForExit } from "../vm/qemu-process.js";
import { Vm } from "../vm/vm.js";
import type { Inspection } from "./inspect.js";
import { clearState, type InstanceState } from "./instance-state.js";
import { detachShare } from "./share-attach.js";
import { stopShareSync } from "./share-sync.js";
import {
  dropSuspend,
  readSuspend,
  type SuspendRecord,
  saveSuspend,
  sealSuspend,
  suspendMethod,
} from "./suspend.js";

export interface StopResult {
  wasRunning: boolean;
  saved: boolean;
  warning?: string;
}

/** `save`: keep the running state for the next start; `powerdown`: shut the guest down; `discard`: just end it. */
export type StopMode = "save" | "powerdown" | "discard";

/**
 * The live instance, or undefined once what a gone one left is cleaned up: a state whose QEMU died, a QEMU of a
 * start that never finished (ended, and said), staging directories of processes that are gone.
 */
export async function liveOrCleaned(
  ctx: Context,
  inspection: Inspection,
): Promise<InstanceState | undefined> {
  if (inspection.state) return inspection.state;
  if (inspection.stale) {
    ctx.report.warn(`QEMU (pid ${inspection.stale.qemu.pid}) of the last start is gone; cleaning up`);
    clearState(ctx.paths);
  }
  if (inspection.orphan) {
    ctx.report.warn(
      `ending QEMU (pid ${inspection.orphan.pid}), which no state describes: left by a start that did not finish, or its state file was unreadable`,
    );
    await terminate(inspection.orphan);
  }
  removeRuntimeFiles(ctx.paths);
  removeAbandonedStaging(ctx.layout.snapshots);
  removeAbandonedStaging(ctx.paths.dir);
  return undefined;
}

/** What saving a guest running with `state`'s RAM writes to the instance directory, at most, plus room to spare. */
function saveBytes(state: InstanceState): number {
  const ram = state.ram ?? { kind: "anonymous" };
  const wholeRam = suspendMethod(ram) !== "x-ignore-shared";
  return (wholeRam ? (state.memoryMiB ?? 0) * 1024 * 1024 : 0) + 64 * 1024 * 1024;
}

/**
 * What a save can do with this VM: keep the state an earlier stop wrote completely before it was interrupted (the
 * guest has been paused since, `postmigrate`, so that state is still exactly the guest's), save a running guest, or
 * nothing, for a VM paused otherwise (its guest cannot unmount the share, nor is its state worth resuming).
 */
async function saveOutlook(
  ctx: Context,
  vm: Vm,
): Promise<
  { kind: "saved-earlier"; record: SuspendRecord } | { kind: "save" } | { kind: "cannot"; status: string }
> {
  const status = (await vm.qmp.queryStatus().catch(() => undefined))?.status ?? "unreachable";
  const earlier = readSuspend(ctx.paths, (message) => ctx.report.warn(message));
  if (status === "postmigrate" && earlier && !earlier.seal) return { kind: "saved-earlier", record: earlier };
  return status === "running" ? { kind: "save" } : { kind: "cannot", status };
}

/** Stops a running instance: saves its guest (mode `save`), or powers it down, or ends it; QEMU is gone after. */
export async function stopRunning(ctx: Context, state: InstanceState, mode: StopMode): Promise<StopResult> {
  const { paths, report } = ctx;
  const vm = await Vm.attach(
    paths,
    state.qemu,
    { report, agentTimeoutMs: ctx.settings.timeouts.agentMs },
    state.services,
  );
  if (!vm) report.warn("QEMU does not answer on its control socket; stopping it with signals");
  let saved: SuspendRecord | undefined;
  let warning: string | undefined;
  let ending = mode;
  if (vm && mode === "save") {
    const outlook = await saveOutlook(ctx, vm);
    if (outlook.kind === "saved-earlier") {
      saved = outlook.record;
      report.info("the running state was saved by an earlier stop that did not finish; keeping it");
    } else if (outlook.kind === "cannot") {
      warning = `the VM is ${outlook.status}: its state cannot be saved; the next start boots from the disk`;
      report.warn(warning);
      ending = "discard";
    } else {
      try {
        // Checked only here: keeping an earlier stop's state, or ending a VM that cannot be saved, needs no room.
        requireFreeSpace(paths.dir, saveBytes(state), {
          what: "saving the running state",
          otherwise: "or `stack-emulator stop --no-save` to power the guest down without saving it",
        });
      } catch (error) {
        await vm.release();
        throw error;
      }
      try {
        report.step("saving the running state");
        if (state.shareDevice) await detachShare(ctx);
        saved = await saveSuspend(ctx, vm, state);
      } catch (error) {
        warning = `could not save the running state (${(error as Error).message}); the next start boots from the disk`;
        report.warn(warning);
        await vm.qmp.cont().catch(() => undefined);
      }
    }
  }
  if (vm && !saved && ending !== "discard") {
    report.step("powering down the guest");
    await vm.qmp.systemPowerdown().catch(() => undefined);
    await waitForExit(state.qemu, ctx.settings.timeouts.powerdownMs);
  }
  report.step("stopping QEMU");
  if (vm) {
    if (!(await vm.end())) {
      throw new EmulatorError(
        "STOP_FAILED",
        `QEMU (pid ${state.qemu.pid}) did not exit after SIGKILL; its state is kept`,
        "check the process with `ps`",
      );
    }
  } else await terminate(state.qemu);
  if (saved) sealSuspend(paths, saved);
  await stopShareSync(paths);
  removeRuntimeFiles(paths);
  if (!saved) {
    // A state an earlier stop left half done is not this guest's any more: it has run since, or was told not to be
    // saved. Guest RAM is worth keeping only with the saved state that needs it.
    dropSuspend(paths);
    rmSync(paths.ram, { force: true });
  }
  clearState(paths);
  return { wasRunning: true, saved: Boolean(saved), ...(warning ? { warning } : {}) };
}
