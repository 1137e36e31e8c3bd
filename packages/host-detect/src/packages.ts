import { readFileSync } from "node:fs";
import path from "node:path";
import { isExecutableFileSync, pathDirs, underRoot } from "./fsroot.js";
import type { HostOs } from "./host.js";

export type PackageManager = "apt" | "dnf" | "pacman" | "zypper" | "apk" | "brew" | "winget";
export type Need = "qemu-amd64" | "qemu-arm64" | "qemu-img" | "firmware-amd64" | "firmware-arm64";

const PACKAGES: Record<PackageManager, Record<Need, string>> = {
  apt: {
    "qemu-amd64": "qemu-system-x86",
    "qemu-arm64": "qemu-system-arm",
    "qemu-img": "qemu-utils",
    "firmware-amd64": "ovmf",
    "firmware-arm64": "qemu-efi-aarch64",
  },
  dnf: {
    "qemu-amd64": "qemu-system-x86-core",
    "qemu-arm64": "qemu-system-aarch64-core",
    "qemu-img": "qemu-img",
    "firmware-amd64": "edk2-ovmf",
    "firmware-arm64": "edk2-aarch64",
  },
  pacman: {
    "qemu-amd64": "qemu-system-x86",
    "qemu-arm64": "qemu-system-aarch64",
    "qemu-img": "qemu-img",
    "firmware-amd64": "edk2-ovmf",
    "firmware-arm64": "edk2-aarch64",
  },
  zypper: {
    "qemu-amd64": "qemu-x86",
    "qemu-arm64": "qemu-arm",
    "qemu-img": "qemu-tools",
    "firmware-amd64": "qemu-ovmf-x86_64",
    "firmware-arm64": "qemu-uefi-aarch64",
  },
  apk: {
    "qemu-amd64": "qemu-system-x86_64",
    "qemu-arm64": "qemu-system-aarch64",
    "qemu-img": "qemu-img",
    "firmware-amd64": "ovmf",
    "firmware-arm64": "aavmf",
  },
  // Homebrew's and the Windows installer's single qemu package carries every target, qemu-img and edk2.
  brew: {
    "qemu-amd64": "qemu",
    "qemu-arm64": "qemu",
    "qemu-img": "qemu",
    "firmware-amd64": "qemu",
    "firmware-arm64": "qemu",
  },
  winget: {
    "qemu-amd64": "SoftwareFreedomConservancy.QEMU",
    "qemu-arm64": "SoftwareFreedomConservancy.QEMU",
    "qemu-img": "SoftwareFreedomConservancy.QEMU",
    "firmware-amd64": "SoftwareFreedomConservancy.QEMU",
    "firmware-arm64": "SoftwareFreedomConservancy.QEMU",
  },
};

const DISTRO_FAMILIES: [RegExp, PackageManager][] = [
  [/^(debian|ubuntu|linuxmint|pop|raspbian|kali|elementary|neon)$/, "apt"],
  [/^(fedora|rhel|centos|rocky|almalinux|ol|amzn)$/, "dnf"],
  [/^(arch|manjaro|endeavouros|artix)$/, "pacman"],
  [/^(opensuse.*|suse|sles|sled)$/, "zypper"],
  [/^alpine$/, "apk"],
];

const MANAGER_BINARIES: [string, PackageManager][] = [
  ["apt-get", "apt"],
  ["dnf", "dnf"],
  ["pacman", "pacman"],
  ["zypper", "zypper"],
  ["apk", "apk"],
];

function osReleaseIds(root: string | undefined): string[] {
  for (const file of ["/etc/os-release", "/usr/lib/os-release"]) {
    let text: string;
    try {
      text = readFileSync(underRoot(root, file), "utf8");
    } catch {
      continue;
    }
    const field = (name: string) =>
      text
        .match(new RegExp(`^${name}=(.*)$`, "m"))?.[1]
        ?.replace(/^["']|["']$/g, "")
        .toLowerCase()
        .split(/\s+/) ?? [];
    return [...field("ID"), ...field("ID_LIKE")].filter((id) => id !== "");
  }
  return [];
}

/**
 * The distribution's own package manager: os-release's ID and ID_LIKE first (an Ubuntu box may also have dnf
 * installed), then whichever known manager is on PATH.
 */
export function detectPackageManager(opts: {
  os: HostOs;
  env?: NodeJS.ProcessEnv;
  root?: string;
}): PackageManager | undefined {
  if (opts.os === "darwin") return "brew";
  if (opts.os === "windows") return "winget";
  if (opts.os !== "linux") return undefined;
  for (const id of osReleaseIds(opts.root)) {
    for (const [pattern, manager] of DISTRO_FAMILIES) if (pattern.test(id)) return manager;
  }
  const dirs = pathDirs(opts.env ?? process.env, opts.os);
  for (const [binary, manager] of MANAGER_BINARIES) {
    if (dirs.some((d) => isExecutableFileSync(underRoot(opts.root, path.join(d, binary))))) return manager;
  }
  return undefined;
}

export function packageNames(manager: PackageManager, needs: Need[]): string[] {
  return [...new Set(needs.map((n) => PACKAGES[manager][n]))];
}

/** A command the user can paste; `sudo` is left out for root, who does not need it. */
export function installCommand(
  manager: PackageManager | undefined,
  needs: Need[],
  opts?: { uid?: number },
): string {
  if (manager === undefined) {
    return `install QEMU with your system's package manager (${needs.join(", ")})`;
  }
  const names = packageNames(manager, needs).join(" ");
  const sudo = (opts?.uid ?? process.getuid?.() ?? -1) === 0 ? "" : "sudo ";
  switch (manager) {
    case "apt":
      return `${sudo}apt-get install -y ${names}`;
    case "dnf":
      return `${sudo}dnf install -y ${names}`;
    case "pacman":
      return `${sudo}pacman -S --needed ${names}`;
    case "zypper":
      return `${sudo}zypper install -y ${names}`;
    case "apk":
      return `${sudo}apk add ${names}`;
    case "brew":
      return `brew install ${names}`;
    case "winget":
      return `winget install --id ${names}`;
  }
}
