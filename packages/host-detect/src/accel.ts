import { execFileSync } from "node:child_process";
import { accessSync, constants, readFileSync, statSync } from "node:fs";
import { userInfo } from "node:os";
import { HostDetectError } from "./errors.js";
import { underRoot } from "./fsroot.js";
import { type HostOs, normalizeArch, normalizeOs } from "./host.js";
import type { QemuAbilities } from "./probe.js";

export type Accelerator = "kvm" | "hvf" | "whpx" | "tcg";
export const ACCELERATORS: readonly Accelerator[] = ["kvm", "hvf", "whpx", "tcg"];
export const ACCEL_ENV = "EMULATOR_ACCEL";
export const KVM_DEVICE = "/dev/kvm";

/** The one host OS each hardware accelerator exists on. */
export const ACCELERATOR_OS: Record<Exclude<Accelerator, "tcg">, HostOs> = {
  kvm: "linux",
  hvf: "darwin",
  whpx: "windows",
};
const OS_NAME: Record<HostOs, string> = { linux: "Linux", darwin: "macOS", windows: "Windows", unknown: "?" };
export interface KvmDeviceStatus {
  path: string;
  exists: boolean;
  /** Readable and writable by this process, as the kernel answers it (group membership, ACLs, root). */
  readWrite: boolean;
  /** Why it is unusable and what to do about it; undefined when usable. */
  problem?: string;
  /** Just the remedy, for doctor's `fix`. */
  fix?: string;
  /** The device's group when it is not usable for lack of membership (usually `kvm`). */
  group?: string;
}

export interface ChooseAcceleratorOptions {
  abilities: Pick<QemuAbilities, "accelerators">;
  env?: NodeJS.ProcessEnv;
  /** Stands in for `/` when looking at /dev/kvm and /etc/group. */
  root?: string;
  os?: string;
  /** The guest's architecture: hardware accelerators only run guests of the host's own architecture. */
  guestArch?: string;
  /** The host's architecture; default this machine's. */
  hostArch?: string;
  /** Whether macOS reports Hypervisor.framework support; asked of `sysctl kern.hv_support` when not given. */
  hvSupport?: boolean;
  /**
   * Accelerators the caller has ruled out, with its reason: e.g. kvm after a kvm boot made no progress on a host
   * whose /dev/kvm cannot run a stock kernel. An explicit EMULATOR_ACCEL still wins.
   */
  exclude?: { accel: string; reason: string }[];
}

export interface AcceleratorChoice {
  accel: Accelerator;
  rejected: { accel: string; reason: string }[];
  /** True when EMULATOR_ACCEL made the choice. */
  overridden: boolean;
  /** The /dev/kvm facts on Linux, for the CLI's fallback decision and for doctor. */
  kvmDevice?: KvmDeviceStatus;
}

function groupOf(gid: number, root: string | undefined): { name: string; members: string[] } | undefined {
  try {
    for (const line of readFileSync(underRoot(root, "/etc/group"), "utf8").split("\n")) {
      const [name, , id, members] = line.split(":");
      if (name !== undefined && Number(id) === gid) {
        return { name, members: (members ?? "").split(",").filter((m) => m !== "") };
      }
    }
  } catch {
    // No /etc/group (containers, macOS): the numeric gid is all we can show.
  }
  return undefined;
}

function currentUser(): string | undefined {
  try {
    return userInfo().username;
  } catch {
    return undefined;
  }
}

/**
 * /dev/kvm is usable when the kernel lets this process open it read-write. That is asked with access(2), not by
 * comparing mode bits to our uid and groups: logind grants desktop users access through an ACL, and root passes
 * regardless of bits; only the kernel knows. (Tests exercise the denied path by running as `nobody`.)
 */
export function kvmDeviceStatus(opts?: { root?: string }): KvmDeviceStatus {
  const device = underRoot(opts?.root, KVM_DEVICE);
  const unusable = (
    rest: Omit<KvmDeviceStatus, "path" | "readWrite" | "problem">,
    why: string,
    fix: string,
  ) => ({
    path: device,
    readWrite: false,
    ...rest,
    problem: `${why}: ${fix}`,
    fix,
  });
  let info: ReturnType<typeof statSync>;
  try {
    info = statSync(device);
  } catch {
    return unusable(
      { exists: false },
      `${KVM_DEVICE} does not exist`,
      "enable virtualization (VT-x/AMD-V) in the firmware settings and run `sudo modprobe kvm_intel` " +
        "(or kvm_amd), or enable nested virtualization if this is a VM",
    );
  }
  try {
    accessSync(device, constants.R_OK | constants.W_OK);
    return { path: device, exists: true, readWrite: true };
  } catch {
    // Fall through to explain why.
  }
  const mode = Number(info.mode) & 0o777;
  const group = groupOf(Number(info.gid), opts?.root);
  const groupName = group?.name ?? `gid ${info.gid}`;
  const user = currentUser();
  const denied = `${KVM_DEVICE} (mode ${mode.toString(8).padStart(4, "0")}, group ${groupName}) is not readable and writable by ${user ?? "this user"}`;
  if ((mode & 0o060) !== 0o060) {
    // Joining the group cannot help when the group has no access: the device's permissions are the problem.
    return unusable(
      { exists: true },
      denied,
      'run `sudo chgrp kvm /dev/kvm && sudo chmod 0660 /dev/kvm`, and keep it with the udev rule KERNEL=="kvm", ' +
        'GROUP="kvm", MODE="0660" in /etc/udev/rules.d/65-kvm.rules; then add yourself to kvm',
    );
  }
  const inGroupFile = user !== undefined && group?.members.includes(user) === true;
  const inSession = process.getgroups?.().includes(Number(info.gid)) ?? false;
  return inGroupFile && !inSession
    ? unusable(
        { exists: true, group: groupName },
        `${denied}: ${user} joined ${groupName} after this session started`,
        `log out and back in (or run \`newgrp ${groupName}\`)`,
      )
    : unusable(
        { exists: true, group: groupName },
        denied,
        `run \`sudo usermod -aG ${groupName} $USER\`, then log out and back in`,
      );
}

function macHypervisorSupported(): boolean {
  try {
    return (
      execFileSync("sysctl", ["-n", "kern.hv_support"], { encoding: "utf8", timeout: 5_000 }).trim() === "1"
    );
  } catch {
    return false;
  }
}

/**
 * The best accelerator this host and QEMU can use: the host's hardware one when its conditions hold, tcg
 * otherwise, with the reason every other option was rejected. EMULATOR_ACCEL overrides the choice but is validated:
 * an unknown name, one the QEMU was built without, or one the host cannot provide is an error.
 */
export function chooseAccelerator(opts: ChooseAcceleratorOptions): AcceleratorChoice {
  const os = normalizeOs(opts.os ?? process.platform);
  const builtIn = new Set(opts.abilities.accelerators);
  const hostArch = normalizeArch(opts.hostArch ?? process.arch);
  const guestArch = opts.guestArch === undefined ? undefined : normalizeArch(opts.guestArch);
  let kvmDevice: KvmDeviceStatus | undefined;

  const hostProblem = (accel: Accelerator): string | undefined => {
    const hardwareOs = accel === "tcg" ? undefined : ACCELERATOR_OS[accel];
    if (hardwareOs !== undefined && hardwareOs !== os)
      return `${accel} is only available on ${OS_NAME[hardwareOs]}`;
    if (!builtIn.has(accel)) {
      return `this QEMU was built without ${accel} (it has: ${[...builtIn].join(", ") || "none"})`;
    }
    if (hardwareOs === undefined) return undefined;
    if (guestArch !== undefined && guestArch !== hostArch) {
      return `${accel} runs only ${hostArch} guests on this ${hostArch} host, not ${guestArch}`;
    }
    if (accel === "kvm") {
      kvmDevice ??= kvmDeviceStatus(opts.root === undefined ? undefined : { root: opts.root });
      return kvmDevice.problem;
    }
    if (accel === "hvf" && !(opts.hvSupport ?? macHypervisorSupported())) {
      return "sysctl kern.hv_support is not 1: this Mac (or the VM it runs in) does not support Hypervisor.framework";
    }
    return undefined;
  };

  const requested = (opts.env ?? process.env)[ACCEL_ENV]?.trim().toLowerCase();
  if (requested !== undefined && requested !== "") {
    if (!(ACCELERATORS as readonly string[]).includes(requested)) {
      throw new HostDetectError(
        "ACCEL_OVERRIDE_INVALID",
        `${ACCEL_ENV}=${requested} is not an accelerator: use one of ${ACCELERATORS.join(", ")}, or unset it.`,
      );
    }
    const accel = requested as Accelerator;
    const problem = hostProblem(accel);
    if (problem !== undefined) {
      throw new HostDetectError(
        "ACCEL_OVERRIDE_INVALID",
        `${ACCEL_ENV}=${accel} cannot be used: ${problem}. Fix that, or unset ${ACCEL_ENV} to choose automatically.`,
      );
    }
    return {
      accel,
      rejected: ACCELERATORS.filter((a) => a !== accel).map((a) => ({
        accel: a,
        reason: `${ACCEL_ENV}=${accel} selects ${accel}`,
      })),
      overridden: true,
      ...(kvmDevice === undefined ? {} : { kvmDevice }),
    };
  }

  const rejected: { accel: string; reason: string }[] = [];
  let chosen: Accelerator | undefined;
  for (const accel of ACCELERATORS) {
    const excluded = opts.exclude?.find((e) => e.accel === accel);
    const problem = excluded?.reason ?? hostProblem(accel);
    if (chosen === undefined && problem === undefined) chosen = accel;
    else rejected.push({ accel, reason: problem ?? `${chosen} is preferred` });
  }
  if (chosen === undefined) {
    throw new HostDetectError(
      "NO_ACCELERATOR",
      `No usable accelerator: ${rejected.map((r) => `${r.accel}: ${r.reason}`).join("; ")}. ` +
        "Install a QEMU build that includes tcg, or fix the hardware accelerator as described.",
    );
  }
  if (os === "linux" && kvmDevice === undefined && builtIn.has("kvm")) {
    kvmDevice = kvmDeviceStatus(opts.root === undefined ? undefined : { root: opts.root });
  }
  return { accel: chosen, rejected, overridden: false, ...(kvmDevice === undefined ? {} : { kvmDevice }) };
}
