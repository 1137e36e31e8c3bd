import { readFileSync } from "node:fs";
import { release } from "node:os";
import { join } from "node:path";
import {
  chooseAccelerator,
  findFirmware,
  findQemu,
  hostInfo,
  probeQemu,
  type QemuAbilities,
} from "@stack/host-detect";
import { EmulatorError } from "./errors.js";
import { writeFileAtomic } from "./fs-atomic.js";
import type { Image } from "./image.js";
import type { HomeLayout } from "./paths.js";
import type { MachineSpec } from "./qemu-args.js";

/** What this CLI learned about the host by trying, kept across runs. */
interface HostFacts {
  kvmNoProgress?: { kernel: string; qemu: string; at: string };
}

function readHostFacts(layout: HomeLayout): HostFacts {
  try {
    return JSON.parse(readFileSync(layout.hostFacts, "utf8"));
  } catch {
    return {};
  }
}

export function rememberKvmNoProgress(layout: HomeLayout, qemu: string): void {
  const facts = readHostFacts(layout);
  facts.kvmNoProgress = { kernel: release(), qemu, at: new Date().toISOString() };
  writeFileAtomic(layout.hostFacts, `${JSON.stringify(facts, null, 2)}\n`);
}

export interface ResolvedMachine {
  machine: MachineSpec;
  qemuImg: string;
  abilities: QemuAbilities;
  /** Why the accelerator is what it is, when that is worth telling. */
  accelNote?: string;
}

export async function resolveMachine(
  image: Image,
  layout: HomeLayout,
  env: NodeJS.ProcessEnv,
): Promise<ResolvedMachine> {
  const arch = image.manifest.arch;
  const host = hostInfo();
  if (arch !== "amd64" && arch !== "arm64") {
    throw new EmulatorError(
      "UNSUPPORTED_ARCH",
      `image architecture ${arch} is not supported`,
      "use an amd64 or arm64 image",
    );
  }
  const qemu = await findQemu(arch, { env });
  // Probing runs QEMU twice; the on-disk cache (keyed by binary path and mtime) keeps that off every start.
  const abilities = await probeQemu(qemu.system, { cacheDir: join(layout.home, "cache") });
  const facts = readHostFacts(layout);
  const kvmRuledOut = facts.kvmNoProgress?.kernel === release();
  const choice = chooseAccelerator({
    abilities,
    env,
    guestArch: arch,
    ...(kvmRuledOut
      ? {
          exclude: [
            { accel: "kvm", reason: `a kvm boot made no progress on this host (${facts.kvmNoProgress?.at})` },
          ],
        }
      : {}),
  });
  const { accel } = choice;
  let accelNote: string | undefined;
  if (kvmRuledOut && accel === "tcg" && !choice.overridden) {
    accelNote =
      "using tcg: a kvm boot made no progress on this host before (set EMULATOR_ACCEL=kvm to retry)";
  } else if (!host.nativeGuestArchs.includes(arch)) {
    accelNote = `using ${accel}: an ${arch} guest on an ${host.arch} host runs emulated, and slowly`;
  }
  const machine: MachineSpec = { qemu: qemu.system, arch, accel };
  if ("firmware" in image.manifest.boot && image.manifest.boot.firmware === "uefi") {
    const firmware = await findFirmware(arch);
    if (!firmware) {
      throw new EmulatorError(
        "FIRMWARE_MISSING",
        `no UEFI firmware for ${arch} found`,
        "install it (Debian/Ubuntu: qemu-efi-aarch64 or ovmf; Homebrew: qemu) and run `stack-emulator doctor`",
      );
    }
    machine.firmware = firmware;
  }
  if (!qemu.img) {
    throw new EmulatorError(
      "QEMU_IMG_MISSING",
      "qemu-img was not found next to QEMU",
      "install qemu-utils (Debian/Ubuntu) or qemu (Homebrew)",
    );
  }
  return { machine, qemuImg: qemu.img, abilities, ...(accelNote ? { accelNote } : {}) };
}
