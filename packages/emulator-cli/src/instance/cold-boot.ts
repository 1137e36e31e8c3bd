import { statSync } from "node:fs";
import { EmulatorError, isEmulatorError } from "../core/errors.js";
import { isSameProcess, type ProcessIdentity } from "../core/process-identity.js";
import { settleBootedGuest, waitServices } from "../guest/guest.js";
import type { RamSpec } from "../vm/qemu-args.js";
import type { Vm } from "../vm/vm.js";
import { type BootInputs, guestWork } from "./boot-inputs.js";
import type { BootKind, Rotation } from "./instance-state.js";
import { launchVm } from "./launch.js";

/** A boot that ended with a VM serving this install's keys (or, when asked, the placeholders). */
export interface BootOutcome {
  vm: Vm;
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

/** Boots the image from `disk` until its services answer; the VM is ended on any failure. */
export async function coldBoot(inputs: BootInputs, disk: string, ram: RamSpec): Promise<Vm> {
  const { report, paths, settings } = inputs.ctx;
  const timeoutMs = settings.timeouts.bootMs;
  const { accel } = inputs.resolved.machine;
  const hardware = accel !== "tcg";
  report.step(`cold booting (${accel})`);
  const serialBefore = fileSize(paths.serialLog);
  let vm: Vm;
  try {
    vm = await launchVm(inputs, disk, ram);
  } catch (error) {
    if (hardware && isEmulatorError(error, "QEMU_EXITED")) {
      throw new AcceleratorFailed(accel, `QEMU failed to start under ${accel} (${error.message})`);
    }
    throw error;
  }
  // The agent comes up with the services: its channel is open by the time they answer.
  vm.openAgent(timeoutMs);
  try {
    if (hardware) {
      // The last line of defence: a hardware accelerator that passed its proof can still stall a real kernel.
      const progressMs = settings.timeouts.kvmProgressMs;
      const progress = await waitForSerialOutput(paths.serialLog, serialBefore, progressMs, vm.identity);
      if (progress === "exited") {
        throw new AcceleratorFailed(accel, `QEMU under ${accel} exited before the guest printed anything`);
      }
      if (progress === "silent") {
        throw new AcceleratorFailed(accel, `a ${accel} boot printed nothing in ${progressMs / 1000} s`);
      }
    }
    report.step("waiting for the services");
    await waitServices(guestWork(inputs, vm), timeoutMs, "cold boot");
    return vm;
  } catch (error) {
    await vm.end();
    throw error;
  }
}

/** A cold boot that ends with this install's keys in the guest. */
export async function coldBootWithKeys(inputs: BootInputs, disk: string): Promise<BootOutcome> {
  const ram: RamSpec = { kind: "anonymous" };
  const vm = await coldBoot(inputs, disk, ram);
  try {
    return { vm, boot: "cold", ram, rotation: await settleBootedGuest(guestWork(inputs, vm)) };
  } catch (error) {
    await vm.end();
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
