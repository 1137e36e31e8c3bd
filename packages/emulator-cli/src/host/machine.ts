import type { Firmware } from "@stack/host-detect";

/** The CPU model of every guest: what a snapshot is taken with is what it resumes on. */
export const CPU_MODEL = "max";

/** The QEMU that runs a guest, and how: binary, architecture, accelerator, firmware. */
export interface MachineSpec {
  qemu: string;
  arch: "amd64" | "arm64";
  accel: string;
  firmware?: Firmware;
}

/**
 * The machine with every property a saved state depends on (it is part of the snapshot fingerprint). virt's GIC
 * is pinned rather than "max", which means the host's under KVM: v3, what TCG emulates for -cpu max and what
 * current arm64 servers and HVF provide (hosts with a GICv2 only, like the Raspberry Pi 4, cannot use KVM then).
 */
export function machineType(arch: "amd64" | "arm64"): string {
  return arch === "amd64" ? "q35" : "virt,gic-version=3";
}
