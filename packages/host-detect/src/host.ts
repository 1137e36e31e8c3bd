export type HostOs = "linux" | "darwin" | "windows" | "unknown";
export type GuestArch = "amd64" | "arm64";
export const GUEST_ARCHS: readonly GuestArch[] = ["amd64", "arm64"];

export interface HostInfo {
  os: HostOs;
  arch: GuestArch | string;
  nativeGuestArchs: GuestArch[];
}

export function normalizeOs(platform: string): HostOs {
  switch (platform) {
    case "linux":
    case "darwin":
    case "windows":
      return platform;
    case "win32":
      return "windows";
    default:
      return "unknown";
  }
}

/** Maps the many spellings (`uname -m`, Node's `process.arch`, Debian, Go) to amd64/arm64; others pass through. */
export function normalizeArch(arch: string): GuestArch | string {
  switch (arch.toLowerCase()) {
    case "x64":
    case "x86_64":
    case "amd64":
      return "amd64";
    case "arm64":
    case "aarch64":
      return "arm64";
    default:
      return arch;
  }
}

export function isGuestArch(arch: string): arch is GuestArch {
  return (GUEST_ARCHS as readonly string[]).includes(arch);
}

/**
 * The platform and arch are parameters so callers (and tests) can ask about another host; they default to this
 * process. A guest runs natively only on its own architecture: every accelerator (kvm, hvf, whpx) virtualises the
 * host CPU, anything else is TCG emulation.
 */
export function hostInfo(opts?: { platform?: string; arch?: string }): HostInfo {
  const os = normalizeOs(opts?.platform ?? process.platform);
  const arch = normalizeArch(opts?.arch ?? process.arch);
  return { os, arch, nativeGuestArchs: isGuestArch(arch) ? [arch] : [] };
}
