import type { Context } from "../core/context.js";
import { formatMiB, freeBytes } from "../core/disk-space.js";
import { EmulatorError } from "../core/errors.js";
import { isSameProcess } from "../core/process-identity.js";
import { waitHealthy } from "../guest/health.js";
import { connectQmp } from "../vm/qemu-process.js";
import { failingServices, type Inspection } from "./inspect.js";
import type { InstanceState } from "./instance-state.js";
import { stopRunning } from "./stop.js";

/** Free space under which a VM paused by a full disk would only fill it again. */
const ROOM_TO_CONTINUE = 256 * 1024 * 1024;

/** Continues a VM that paused when the home's disk filled, once there is room again: the guest loses nothing. */
async function continueAfterFullDisk(ctx: Context, state: InstanceState): Promise<boolean> {
  const free = freeBytes(ctx.layout.home);
  if (free !== undefined && free < ROOM_TO_CONTINUE) {
    throw new EmulatorError(
      "NO_SPACE",
      `the emulator paused when the disk of ${ctx.layout.home} filled, and it has ${formatMiB(free)} free`,
      `free at least ${formatMiB(ROOM_TO_CONTINUE)} there, then run \`stack-emulator start\` again: the VM continues where it stopped`,
    );
  }
  ctx.report.warn("continuing the VM that paused when the disk filled, now that there is room");
  const qmp = await connectQmp(ctx.paths, 5000);
  try {
    await qmp.cont();
  } finally {
    await qmp.close().catch(() => undefined);
  }
  return serving(ctx, state);
}

async function serving(ctx: Context, state: InstanceState): Promise<boolean> {
  const { healthy, results } = await waitHealthy(state.services, {
    timeoutMs: ctx.settings.timeouts.guestMs ?? 45_000,
    stillRunning: () => isSameProcess(state.qemu),
  });
  if (!healthy)
    ctx.report.warn(`the running emulator's services do not answer (${failingServices(results)})`);
  return healthy;
}

/**
 * A running instance as `start` finds it (a probed inspection): its state when it serves, after continuing it where
 * that loses nothing; otherwise undefined, once it is stopped (its state saved where that is still possible) so that
 * the start boots again by the plan, instead of saying "already running" for a VM that cannot serve.
 */
export async function recoverRunning(
  ctx: Context,
  inspection: Inspection,
): Promise<InstanceState | undefined> {
  const state = inspection.state as InstanceState;
  if (inspection.status === "running") return state;
  if (inspection.vm === "running" || inspection.vm === "io-error") {
    // A VM paused on a full disk is running again once continued: it is judged like any other by its services.
    const serves =
      inspection.vm === "io-error" ? await continueAfterFullDisk(ctx, state) : await serving(ctx, state);
    if (serves) return state;
    ctx.report.warn("powering down the running emulator that does not serve, and starting it again");
    await stopRunning(ctx, state, "powerdown");
  } else {
    // Paused: only a state an interrupted stop saved whole is kept (stopRunning tells); the rest is ended.
    ctx.report.warn(`the running emulator's VM is ${inspection.vm}: ending it and starting again`);
    await stopRunning(ctx, state, "save");
  }
  return undefined;
}
