import { release } from "node:os";
import { join } from "node:path";
import {
  ACCEL_ENV,
  ACCELERATOR_OS,
  type Accelerator,
  type AcceleratorProof,
  chooseProvenAccelerator,
  type DoctorReport,
  doctor,
  findFirmware,
  findQemu,
  hostInfo,
  probeQemu,
  type QemuAbilities,
} from "@stack/host-detect";
import * as v from "valibot";
import { EmulatorError } from "../core/errors.js";
import { writeFileAtomic } from "../core/fs-atomic.js";
import type { HomeLayout } from "../core/paths.js";
import type { Settings } from "../core/settings.js";
import { readStateFile } from "../core/state-file.js";
import { CPU_MODEL, type MachineSpec, machineType } from "../host/machine.js";
import type { Image } from "../image/image.js";

/**
 * What this CLI learned about the host's accelerators by trying, kept across runs: a proof's answer, or a boot that
 * failed under a hardware accelerator. Valid for one kernel and one QEMU binary and version; anything else proves
 * again.
 */
interface RememberedProof extends AcceleratorProof {
  kernel: string;
  qemu: string;
  qemuVersion: string;
  at: string;
}

interface HostFacts {
  accelerators?: RememberedProof[];
  /** Why-tcg messages already shown on this host: each is said once, `doctor` says it every time. */
  told?: string[];
}

const hostFactsSchema: v.GenericSchema<unknown, HostFacts> = v.object({
  accelerators: v.optional(
    v.array(
      v.object({
        accel: v.picklist(["kvm", "hvf", "whpx", "tcg"]),
        arch: v.picklist(["amd64", "arm64"]),
        works: v.boolean(),
        reason: v.string(),
        ms: v.number(),
        kernel: v.string(),
        qemu: v.string(),
        qemuVersion: v.string(),
        at: v.string(),
      }),
    ),
  ),
  told: v.optional(v.array(v.string())),
});

/** What this host taught us; an unreadable host.json is as good as none (proofs are made again, then rewritten). */
function readHostFacts(layout: HomeLayout): HostFacts {
  return readStateFile(layout.hostFacts, hostFactsSchema) ?? {};
}

interface HostKey {
  qemu: string;
  qemuVersion: string;
}

const sameHost = (p: RememberedProof, key: HostKey) =>
  p.kernel === release() && p.qemu === key.qemu && p.qemuVersion === key.qemuVersion;

/** Changes host.json in one read and one atomic write. */
function updateHostFacts(layout: HomeLayout, change: (facts: HostFacts) => void): void {
  const facts = readHostFacts(layout);
  change(facts);
  writeFileAtomic(layout.hostFacts, `${JSON.stringify(facts, null, 2)}\n`);
}

/** The answers remembered for this kernel and QEMU. */
function knownProofs(layout: HomeLayout, key: HostKey): AcceleratorProof[] {
  return (readHostFacts(layout).accelerators ?? []).filter((p) => sameHost(p, key));
}

/** Keeps each answer, replacing an older one for the same accelerator, guest architecture, kernel and QEMU. */
function rememberProofs(layout: HomeLayout, key: HostKey, proofs: AcceleratorProof[]): void {
  if (proofs.length === 0) return;
  const fresh = proofs.map((p) => ({ ...p, kernel: release(), ...key, at: new Date().toISOString() }));
  updateHostFacts(layout, (facts) => {
    const kept = (facts.accelerators ?? []).filter(
      (old) => !fresh.some((p) => p.accel === old.accel && p.arch === old.arch && sameHost(old, key)),
    );
    facts.accelerators = [...kept, ...fresh];
  });
}

/** Whether `message` is new to this host's user; it is remembered as told either way. */
function firstTelling(layout: HomeLayout, message: string): boolean {
  if (readHostFacts(layout).told?.includes(message)) return false;
  updateHostFacts(layout, (facts) => {
    facts.told = [...(facts.told ?? []), message];
  });
  return true;
}

/** A boot under a hardware accelerator failed where tcg would not have: remembered like a failed proof. */
export function rememberAcceleratorFailure(
  layout: HomeLayout,
  resolved: ResolvedMachine,
  reason: string,
): void {
  const { machine, abilities } = resolved;
  rememberProofs(layout, { qemu: machine.qemu, qemuVersion: abilities.version.text }, [
    { accel: machine.accel as Accelerator, arch: machine.arch, works: false, reason, ms: 0 },
  ]);
}

export interface ResolvedMachine {
  machine: MachineSpec;
  qemuImg: string;
  abilities: QemuAbilities;
  /** EMULATOR_ACCEL chose the accelerator: a failure under it is an error, never a silent fallback. */
  accelOverridden: boolean;
  /** Why the accelerator is what it is, when that is worth telling. */
  accelNote?: { level: "info" | "warn"; message: string };
}

export async function resolveMachine(image: Image, settings: Settings): Promise<ResolvedMachine> {
  const { layout, hostEnv: env } = settings;
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
  const key = { qemu: qemu.system, qemuVersion: abilities.version.text };
  const choice = await chooseProvenAccelerator({
    qemu: qemu.system,
    abilities,
    env,
    guestArch: arch,
    known: knownProofs(layout, key),
    machine: machineType(arch),
    cpu: CPU_MODEL,
    timeoutMs: settings.timeouts.accelProofMs,
  });
  rememberProofs(layout, key, choice.proofs);
  const { accel } = choice;
  let accelNote: ResolvedMachine["accelNote"];
  // Why this host's own accelerator is not used: said on the first start that finds it so (doctor says it always).
  const own = choice.rejected.find((r) => (ACCELERATOR_OS as Record<string, string>)[r.accel] === host.os);
  const whyTcg =
    accel === "tcg" && !choice.overridden && own ? `${own.accel} is not usable: ${own.reason}` : undefined;
  const failedNow = choice.proofs.find((p) => !p.works);
  if (failedNow && !choice.overridden) {
    if (whyTcg) firstTelling(layout, whyTcg);
    accelNote = {
      level: "warn",
      message: `${failedNow.accel} cannot run guests on this host (${failedNow.reason}); using ${accel}, remembered in ${layout.hostFacts} (${ACCEL_ENV}=${failedNow.accel} proves it again)`,
    };
  } else if (!host.nativeGuestArchs.includes(arch)) {
    accelNote = {
      level: "info",
      message: `using ${accel}: an ${arch} guest on an ${host.arch} host runs emulated, and slowly`,
    };
  } else if (whyTcg && firstTelling(layout, whyTcg)) {
    accelNote = { level: "info", message: `using tcg, ${whyTcg} (\`stack-emulator doctor\` says more)` };
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
  return {
    machine,
    qemuImg: qemu.img,
    abilities,
    accelOverridden: choice.overridden,
    ...(accelNote ? { accelNote } : {}),
  };
}

/** host-detect's doctor with this CLI's memory of accelerator proofs: known answers reused, new ones kept. */
export async function hostDoctor(settings: Settings, guestArch?: "amd64" | "arm64"): Promise<DoctorReport> {
  const { layout, hostEnv: env } = settings;
  const arch = guestArch ?? hostInfo().nativeGuestArchs[0] ?? "amd64";
  const cacheDir = join(layout.home, "cache");
  let key: HostKey | undefined;
  try {
    const qemu = await findQemu(arch, { env });
    key = { qemu: qemu.system, qemuVersion: (await probeQemu(qemu.system, { cacheDir })).version.text };
  } catch {
    // doctor itself reports a missing or broken QEMU.
  }
  const report = await doctor({
    arch,
    env,
    cacheDir,
    machine: machineType(arch),
    cpu: CPU_MODEL,
    proofTimeoutMs: settings.timeouts.accelProofMs,
    ...(key ? { knownProofs: knownProofs(layout, key) } : {}),
  });
  if (key) rememberProofs(layout, key, report.proofs);
  return report;
}
