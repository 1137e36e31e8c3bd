import { ACCEL_ENV, ACCELERATOR_OS } from "./accel.js";
import type { HostDetectError } from "./errors.js";
import { findQemu, QEMU_ENV, type QemuBinaries } from "./find-qemu.js";
import { listFirmware } from "./firmware.js";
import { type GuestArch, type HostInfo, hostInfo, isGuestArch } from "./host.js";
import { detectPackageManager, installCommand, type Need, type PackageManager } from "./packages.js";
import { probeQemu, type QemuAbilities } from "./probe.js";
import { type AcceleratorProof, chooseProvenAccelerator, type ProvenChoice } from "./prove.js";

export type CheckStatus = "ok" | "warn" | "fail";

export interface DoctorCheck {
  id: string;
  title: string;
  status: CheckStatus;
  detail: string;
  fix?: string;
}

export interface DoctorReport {
  ok: boolean;
  checks: DoctorCheck[];
  /** Accelerator proofs this report ran, for the caller to remember (see `knownProofs`). */
  proofs: AcceleratorProof[];
}

export interface DoctorOptions {
  /** The guest architecture to check for; default the host's own (amd64 on an unknown host). */
  arch?: GuestArch;
  env?: NodeJS.ProcessEnv;
  /** Stands in for `/` (descriptor dirs, /dev/kvm, os-release, well-known binary locations). */
  root?: string;
  os?: string;
  hostArch?: string;
  /** Passed to probeQemu. */
  cacheDir?: string;
  timeoutMs?: number;
  /** Whether fixes need `sudo`; default this process's uid. */
  uid?: number;
  /** Passed to chooseAccelerator: accelerators the caller has ruled out on this host, with its reason. */
  excludeAccelerators?: { accel: string; reason: string }[];
  /** Earlier proofs on this host (same kernel, QEMU binary and version): not run again. */
  knownProofs?: AcceleratorProof[];
  /** Passed to the accelerator proof: the machine and CPU model the caller runs. */
  machine?: string;
  cpu?: string;
  proofTimeoutMs?: number;
}

const WINDOWS_HYPERVISOR_FIX =
  "In an administrator PowerShell: Enable-WindowsOptionalFeature -Online -FeatureName HypervisorPlatform; then reboot";

/** What one check found: its status, what it saw and, when something is wrong, the fix. */
interface Finding {
  status: CheckStatus;
  detail: string;
  fix?: string | undefined;
}

function finding(status: CheckStatus, detail: string, fix?: string): Finding {
  return { status, detail, fix };
}

function check(id: string, title: string, f: Finding): DoctorCheck {
  const { status, detail, fix } = f;
  return fix === undefined ? { id, title, status, detail } : { id, title, status, detail, fix };
}

function accelFix(choice: ProvenChoice, os: string, native: boolean): string | undefined {
  if (!native) return "Use an image built for this host's architecture to run with hardware acceleration";
  if (choice.kvmDevice?.fix !== undefined) return choice.kvmDevice.fix;
  if (choice.proof && !choice.proof.works)
    return (
      `${choice.proof.accel} is present but cannot run a guest (seen in nested and paravirtualized VMs); ` +
      `nothing to fix here: the emulator uses tcg. After a host change, ${ACCEL_ENV}=${choice.proof.accel} proves it again`
    );
  if (os === "windows") return WINDOWS_HYPERVISOR_FIX;
  if (os === "darwin")
    return "Hypervisor.framework is unavailable: run on a Mac (not in a VM without nested virtualization)";
  return undefined;
}

/** What the checks share: the host and options, and what earlier checks found for later ones. */
interface DoctorContext {
  opts: DoctorOptions | undefined;
  host: HostInfo;
  arch: GuestArch;
  env: NodeJS.ProcessEnv;
  /** For findQemu and detectPackageManager. */
  lookup: { os: string; env: NodeJS.ProcessEnv; root?: string };
  /** The command that installs `needs` on this platform. */
  install: (needs: Need[]) => string;
  /** Set by the qemu check when a binary was found. */
  binaries?: QemuBinaries;
  /** Set by the qemu-version check when the probe answered. */
  abilities?: QemuAbilities;
  /** Proofs run by the accelerator check. */
  proofs: AcceleratorProof[];
}

function doctorContext(opts: DoctorOptions | undefined): DoctorContext {
  const host = hostInfo({ platform: opts?.os ?? process.platform, arch: opts?.hostArch ?? process.arch });
  const arch: GuestArch = opts?.arch ?? host.nativeGuestArchs[0] ?? "amd64";
  const env = opts?.env ?? process.env;
  const lookup = { os: host.os, env, ...(opts?.root === undefined ? {} : { root: opts.root }) };
  const manager: PackageManager | undefined = detectPackageManager(lookup);
  const install = (needs: Need[]) =>
    installCommand(manager, needs, opts?.uid === undefined ? undefined : { uid: opts.uid });
  return { opts, host, arch, env, lookup, install, proofs: [] };
}

function hostPlatform({ host }: DoctorContext): Finding {
  const platform = `${host.os}/${host.arch}`;
  if (host.os === "unknown" || !isGuestArch(String(host.arch)))
    return finding("fail", `${platform} is not supported`, "Run on Linux or macOS on amd64 or arm64");
  if (host.os === "windows")
    return finding(
      "warn",
      `${platform}: QEMU runs with WHPX, but the emulator is only tested on Linux and macOS; unix sockets need Windows 10 1803+`,
      "Use WSL2 (Linux) for the supported path",
    );
  return finding("ok", `${platform}, native guests: ${host.nativeGuestArchs.join(", ")}`);
}

async function qemuBinary(ctx: DoctorContext): Promise<Finding> {
  try {
    ctx.binaries = await findQemu(ctx.arch, ctx.lookup);
    return finding("ok", `${ctx.binaries.system} (from ${ctx.binaries.source})`);
  } catch (error) {
    const override = (error as HostDetectError).code === "QEMU_OVERRIDE_INVALID";
    return finding(
      "fail",
      (error as Error).message,
      override
        ? `Unset ${QEMU_ENV[ctx.arch]} or point it at a qemu-system binary`
        : ctx.install([`qemu-${ctx.arch}`, "qemu-img"]),
    );
  }
}

function qemuImg({ binaries, install }: DoctorContext): Finding | undefined {
  if (binaries === undefined) return undefined;
  return binaries.img === undefined
    ? finding("fail", "qemu-img was not found; it creates instance disk overlays", install(["qemu-img"]))
    : finding("ok", binaries.img);
}

async function qemuVersionFinding(ctx: DoctorContext): Promise<Finding | undefined> {
  const { binaries, opts, arch, install } = ctx;
  if (binaries === undefined) return undefined;
  try {
    const abilities = await probeQemu(binaries.system, {
      ...(opts?.cacheDir === undefined ? {} : { cacheDir: opts.cacheDir }),
      ...(opts?.timeoutMs === undefined ? {} : { timeoutMs: opts.timeoutMs }),
    });
    ctx.abilities = abilities;
    const v = abilities.version;
    return v.major < 4
      ? finding("warn", `QEMU ${v.text} is older than 4.0, the oldest tested`, install([`qemu-${arch}`]))
      : finding("ok", `QEMU ${v.text}; accelerators built in: ${abilities.accelerators.join(", ")}`);
  } catch (error) {
    return finding("fail", (error as Error).message, install([`qemu-${arch}`]));
  }
}

function snapshotMethod({ abilities, arch, install }: DoctorContext): Finding | undefined {
  if (abilities === undefined) return undefined;
  const caps = abilities.migrationCapabilities;
  if (caps.includes("x-ignore-shared") && abilities.memoryBackendFile)
    return finding(
      "ok",
      "x-ignore-shared with a file-backed RAM template: resume maps RAM instead of loading it",
    );
  return finding(
    "warn",
    `this QEMU lacks ${caps.includes("x-ignore-shared") ? "memory-backend-file" : "the x-ignore-shared capability"}: ` +
      `resume loads the whole RAM from a ${abilities.fileMigration ? "file:" : "exec:"} stream, which is slower`,
    `Upgrade QEMU: ${install([`qemu-${arch}`])}`,
  );
}

async function acceleration(ctx: DoctorContext): Promise<Finding | undefined> {
  const { abilities, binaries, opts, host, arch } = ctx;
  if (abilities === undefined) return undefined;
  try {
    const choice = await chooseProvenAccelerator({
      qemu: (binaries as QemuBinaries).system,
      abilities,
      env: ctx.env,
      os: host.os,
      guestArch: arch,
      hostArch: String(host.arch),
      ...(opts?.excludeAccelerators === undefined ? {} : { exclude: opts.excludeAccelerators }),
      ...(opts?.knownProofs === undefined ? {} : { known: opts.knownProofs }),
      ...(opts?.machine === undefined ? {} : { machine: opts.machine }),
      ...(opts?.cpu === undefined ? {} : { cpu: opts.cpu }),
      ...(opts?.proofTimeoutMs === undefined ? {} : { timeoutMs: opts.proofTimeoutMs }),
      ...(opts?.root === undefined ? {} : { root: opts.root }),
    });
    // Another platform's accelerator is no news to the user.
    const elsewhere = (accel: string) =>
      Object.entries(ACCELERATOR_OS).some(([a, os]) => a === accel && os !== host.os);
    const rejected = choice.rejected.filter((r) => !elsewhere(r.accel)).map((r) => `${r.accel}: ${r.reason}`);
    ctx.proofs.push(...choice.proofs);
    const proven = choice.proof?.works ? ` (proven: ${choice.proof.reason} in ${choice.proof.ms} ms)` : "";
    const detail = [
      `${choice.accel}${choice.overridden ? " (EMULATOR_ACCEL)" : ""}${proven}`,
      ...rejected,
    ].join("; ");
    const native = host.nativeGuestArchs.includes(arch);
    // Measured on one amd64 host under tcg: the arm64 dev image cold boots ~3x slower than the amd64 one (30 s
    // against 10 s) and resumes ~2.5x slower; a hardware-accelerated guest is many times faster than either.
    const cost = native
      ? "Guests run emulated (tcg), several times slower"
      : `An ${arch} guest on an ${host.arch} host is translated instruction by instruction (tcg): about three times slower than a native guest under tcg, and far slower than one with hardware acceleration`;
    return choice.accel === "tcg" && !choice.overridden
      ? finding("warn", `${detail}. ${cost}`, accelFix(choice, host.os, native))
      : finding("ok", detail);
  } catch (error) {
    return finding("fail", (error as Error).message, "Unset EMULATOR_ACCEL or fix what it names");
  }
}

async function uefiFirmware({ arch, env, opts, install }: DoctorContext): Promise<Finding> {
  try {
    const { matches, warnings } = await listFirmware(arch, {
      env,
      ...(opts?.root === undefined ? {} : { root: opts.root }),
    });
    const found = matches[0];
    const skipped = warnings.length === 0 ? "" : ` (${warnings.join("; ")})`;
    if (found !== undefined)
      return finding(
        warnings.length === 0 ? "ok" : "warn",
        `${found.code}${found.vars ? ` + ${found.vars}` : ""}${skipped}`,
      );
    // Images that boot a kernel directly (the dev images) need none; disk-booting arm64 images need UEFI on virt,
    // x86 ones boot with the built-in SeaBIOS unless they ask for UEFI.
    return finding(
      "warn",
      `no UEFI firmware for ${arch} was found; only images that boot with UEFI need it${arch === "arm64" ? " (arm64 release images do)" : ""}${skipped}`,
      install([`firmware-${arch}`]),
    );
  } catch (error) {
    return finding("fail", (error as Error).message);
  }
}

/**
 * The checks, in report order. A check that needs what an earlier one did not find (no QEMU binary, no probe)
 * finds nothing and is left out of the report.
 */
const CHECKS: readonly {
  id: string;
  title: string | ((ctx: DoctorContext) => string);
  run: (ctx: DoctorContext) => Finding | undefined | Promise<Finding | undefined>;
}[] = [
  { id: "host", title: "Host platform", run: hostPlatform },
  { id: "qemu", title: (ctx) => `QEMU for ${ctx.arch} guests`, run: qemuBinary },
  { id: "qemu-img", title: "qemu-img", run: qemuImg },
  { id: "qemu-version", title: "QEMU version", run: qemuVersionFinding },
  { id: "snapshot", title: "Snapshot method", run: snapshotMethod },
  { id: "accelerator", title: "Hardware acceleration", run: acceleration },
  { id: "firmware", title: "UEFI firmware", run: uefiFirmware },
];

/**
 * Every check the emulator depends on, each with what was found and, when something is wrong, the command that
 * fixes it on this platform. Never throws: a failing step becomes a failed check. `ok` is false when the emulator
 * cannot run at all; warnings (tcg only, a slower snapshot method) leave it true.
 */
export async function doctor(opts?: DoctorOptions): Promise<DoctorReport> {
  const ctx = doctorContext(opts);
  const checks: DoctorCheck[] = [];
  for (const { id, title, run } of CHECKS) {
    const found = await run(ctx);
    if (found !== undefined) checks.push(check(id, typeof title === "string" ? title : title(ctx), found));
  }
  return { ok: checks.every((c) => c.status !== "fail"), checks, proofs: ctx.proofs };
}
