import { statSync } from "node:fs";
import { timeoutMsFromEnv } from "../core/context.js";
import { EmulatorError, isEmulatorError } from "../core/errors.js";
import { isSameProcess, type ProcessIdentity } from "../core/process-identity.js";
import { settleBootedGuest, waitServices } from "../guest/guest.js";
import { abandon, connectAgent, type LiveVm, launchVm } from "../vm/live-vm.js";
import type { RamSpec } from "../vm/qemu-args.js";
import type { BootInputs } from "./boot-inputs.js";
import type { BootKind, Rotation } from "./instance-state.js";

/** A boot that ended with a VM serving this install's keys (or, when asked, the placeholders). */
export interface BootOutcome {
  vm: LiveVm;
  boot: BootKind;
  ram: RamSpec;
  rotation: Rotation;
  /** How the state it resumed was saved. */
  method?: string;
  /** The config-file share's 9p device is in the VM (resumed with it). */
  shareDevice?: boolean;
}

/**
 * A hardware accelerator failed a real boot where tcg would not have: the caller decides what follows (tcg, or an
 * error when the user asked for that accelerator). `reason` is what was seen, for the user and for host.json.
 */
export class AcceleratorFailed extends EmulatorError {
  constructor(
    readonly accel: string,
    readonly reason: string,
  ) {
    super("ACCEL_FAILED", `${reason}: this host's ${accel} cannot boot the guest`);
  }
}

/** How long a boot from the disk may take to become healthy. */
export function coldBootTimeoutMs(env: NodeJS.ProcessEnv): number {
  return timeoutMsFromEnv(env, ["STACK_EMULATOR_BOOT_TIMEOUT", "EMULATOR_READY_TIMEOUT"], 300_000);
}

/** Boots the image from `disk` until its services answer; the VM is ended on any failure. */
export async function coldBoot(inputs: BootInputs, disk: string, ram: RamSpec): Promise<LiveVm> {
  const { report, env, paths } = inputs.ctx;
  const timeoutMs = coldBootTimeoutMs(env);
  const { accel } = inputs.resolved.machine;
  const hardware = accel !== "tcg";
  report.step(`cold booting (${accel})`);
  const serialBefore = fileSize(paths.serialLog);
  let vm: LiveVm;
  try {
    vm = await launchVm(inputs, disk, ram);
  } catch (error) {
    if (hardware && isEmulatorError(error, "QEMU_EXITED")) {
      throw new AcceleratorFailed(accel, `QEMU failed to start under ${accel} (${error.message})`);
    }
    throw error;
  }
  // The agent comes up with the services: its channel is open by the time they answer.
  vm.agent = connectAgent(inputs.ctx, timeoutMs);
  try {
    if (hardware) {
      // The last line of defence: a hardware accelerator that passed its proof can still stall a real kernel.
      const progressMs = timeoutMsFromEnv(env, "STACK_EMULATOR_KVM_PROGRESS_TIMEOUT", 20_000);
      const progress = await waitForSerialOutput(paths.serialLog, serialBefore, progressMs, vm.identity);
      if (progress === "exited") {
        throw new AcceleratorFailed(accel, `QEMU under ${accel} exited before the guest printed anything`);
      }
      if (progress === "silent") {
        throw new AcceleratorFailed(accel, `a ${accel} boot printed nothing in ${progressMs / 1000} s`);
      }
    }
    report.step("waiting for the services");
    await waitServices(inputs, vm, timeoutMs, "cold boot");
    return vm;
  } catch (error) {
    await abandon(vm, paths);
    throw error;
  }
}

/** A cold boot that ends with this install's keys in the guest. */
export async function coldBootWithKeys(inputs: BootInputs, disk: string): Promise<BootOutcome> {
  const ram: RamSpec = { kind: "anonymous" };
  const vm = await coldBoot(inputs, disk, ram);
  try {
    return { vm, boot: "cold", ram, rotation: await settleBootedGuest(inputs, vm) };
  } catch (error) {
    await abandon(vm, inputs.ctx.paths);
    throw error;
  }
}

function fileSize(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

/** The serial log is appended to across boots: progress is growth past `before`. */
async function waitForSerialOutput(
  log: string,
  before: number,
  timeoutMs: number,
  identity: ProcessIdentity,
): Promise<"printed" | "silent" | "exited"> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (fileSize(log) > before) return "printed";
    if (!isSameProcess(identity)) return "exited";
    await new Promise((r) => setTimeout(r, 100));
  }
  return "silent";
}
