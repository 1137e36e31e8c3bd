import { QgaClient } from "@stack/qga";
import { type QmpClient, readsStateByPath, restoreVmState, type SaveMethod } from "@stack/qmp";
import { type Context, timeoutMsFromEnv } from "../core/context.js";
import type { InstancePaths } from "../core/paths.js";
import type { ProcessIdentity } from "../core/process-identity.js";
import type { BootInputs } from "../instance/boot-inputs.js";
import type { RamSpec } from "./qemu-args.js";
import { connectQmp, INHERITED_STATE_FD, launchQemu, removeRuntimeFiles, terminate } from "./vm.js";

/** A VM this command started and still owns: on failure it is ended before anything else is tried. */
export interface LiveVm {
  identity: ProcessIdentity;
  qmp: QmpClient;
  /** A guest agent connection opened early (before a restored guest ran, or as a cold boot began). */
  agent?: Promise<QgaClient>;
}

/** A saved state to load into the new QEMU instead of booting. */
export interface Restore {
  method: SaveMethod;
  state: string;
  /** The RAM file is this instance's own and moves on with it (see restoreVmState). */
  ownsRamFile?: boolean;
  /** The state was saved with the config-file share's 9p device plugged in: the new QEMU needs it too. */
  shareDevice?: boolean;
}

/** Starts QEMU for `inputs` on `disk`; with `restore`, loads that state and lets the guest run. */
export async function launchVm(
  inputs: BootInputs,
  disk: string,
  ram: RamSpec,
  restore?: Restore,
): Promise<LiveVm> {
  const { ctx } = inputs;
  ctx.report.mark("launching QEMU");
  // Methods that stream the state can read it from a descriptor QEMU inherits; the others open it by path.
  const viaFd = restore && !readsStateByPath(restore.method);
  const identity = await launchQemu(
    {
      machine: inputs.resolved.machine,
      image: inputs.image,
      paths: ctx.paths,
      disk,
      services: inputs.services,
      ram,
      incoming: Boolean(restore),
      shareDevice: Boolean(restore?.shareDevice),
    },
    viaFd ? restore.state : undefined,
  );
  ctx.report.mark("QEMU initialised");
  let vm: LiveVm | undefined;
  try {
    vm = { identity, qmp: await connectQmp(ctx.paths) };
    ctx.report.mark("QMP negotiated");
    if (restore) {
      // Connected before the guest runs: a guest saved with the agent's channel open (see holdingAgent) finds it
      // still open and answers at once. A channel that opens after the resume is only noticed on the agent's
      // next poll, which qemu-ga makes every 100 ms while no host is connected.
      vm.agent = connectAgent(ctx);
      await restoreVmState(vm.qmp, {
        method: restore.method,
        path: restore.state,
        ...(viaFd ? { fd: INHERITED_STATE_FD } : {}),
        ...(restore.ownsRamFile ? { ownsRamFile: true } : {}),
        timeoutMs: 60_000,
      });
      ctx.report.mark("state restored");
      await vm.qmp.cont();
      ctx.report.mark("guest running");
    }
    return vm;
  } catch (error) {
    if (vm) await abandonVm(vm);
    else await terminate(identity).catch(() => undefined);
    throw error;
  }
}

export async function abandonVm(vm: LiveVm): Promise<void> {
  await terminate(vm.identity, vm.qmp).catch(() => undefined);
  await vm.agent?.then((qga) => qga.close()).catch(() => undefined);
}

/** Ends `vm` (if any) and removes what QEMU leaves behind: sockets, pid file. */
export async function abandon(vm: LiveVm | undefined, paths: InstancePaths): Promise<void> {
  if (vm) await abandonVm(vm);
  removeRuntimeFiles(paths);
}

export function connectAgent(
  ctx: Context,
  timeoutMs = timeoutMsFromEnv(ctx.env, "STACK_EMULATOR_AGENT_TIMEOUT", 15_000),
) {
  const agent = QgaClient.connect(ctx.paths.qgaSocket, { timeoutMs });
  // Awaited later, or never when the start fails first: its rejection must not count as unhandled.
  agent.catch(() => undefined);
  return agent;
}

/** The connection opened early for this VM (handed over once, so nothing else closes it), else a new one. */
function takeAgent(ctx: Context, vm: LiveVm, timeoutMs?: number): Promise<QgaClient> {
  const pending = vm.agent ?? connectAgent(ctx, timeoutMs);
  vm.agent = undefined;
  return pending;
}

/**
 * Runs `save` with the guest agent's channel open, so that the saved guest waits on an open channel (see launchVm).
 * An agent that does not answer soon does not hold the save up; the resume then pays the agent's poll delay.
 */
export async function holdingAgent<T>(ctx: Context, vm: LiveVm, save: () => Promise<T>): Promise<T> {
  const qga = await takeAgent(ctx, vm, 2000).catch(() => undefined);
  try {
    return await save();
  } finally {
    await qga?.close().catch(() => undefined);
  }
}

export async function withAgent<T>(ctx: Context, vm: LiveVm, fn: (qga: QgaClient) => Promise<T>): Promise<T> {
  // An early connection that failed is not retried: it already waited the whole agent timeout, or QEMU is gone.
  const qga = await takeAgent(ctx, vm);
  ctx.report.mark("guest agent in sync");
  try {
    return await fn(qga);
  } finally {
    await qga.close().catch(() => undefined);
  }
}
