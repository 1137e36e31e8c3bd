import { readdir, readFile, stat } from "node:fs/promises";
import path from "node:path";
import { HostDetectError } from "./errors.js";
import { isFile, underRoot } from "./fsroot.js";
import { type GuestArch, isGuestArch, normalizeArch } from "./host.js";

/** QEMU's names (docs/interop/firmware.json) for our guest architectures and their default machines. */
const QEMU_ARCH: Record<GuestArch, string> = { amd64: "x86_64", arm64: "aarch64" };
const DEFAULT_MACHINE: Record<GuestArch, string> = { amd64: "q35", arm64: "virt" };
// Descriptors name versioned machine types ("pc-q35-*"); our aliases stand for the latest version of each.
const MACHINE_ALIASES: Record<string, string> = { q35: "pc-q35-", pc: "pc-i440fx-", virt: "virt-" };
// Secure Boot needs SMM and enrolled keys a development guest does not have; plain UEFI boots everything we ship.
export const DEFAULT_EXCLUDED_FEATURES = ["secure-boot", "requires-smm", "enrolled-keys"];

export interface FirmwareOptions {
  /** Stands in for `/` for the descriptor directories and the image files they name. */
  root?: string;
  /** For $XDG_CONFIG_HOME and $HOME (the per-user descriptor directory). */
  env?: NodeJS.ProcessEnv;
  /** Machine type: an alias (`q35`, `virt`) or a versioned name (`pc-q35-7.2`). Default q35 / virt. */
  machine?: string;
  interface?: "uefi" | "bios";
  /** Every one of these must be listed by the descriptor. */
  features?: string[];
  /** Descriptors listing any of these are skipped. */
  excludeFeatures?: string[];
  /** Malformed or dangling descriptors; default: process.emitWarning. */
  onWarning?: (message: string) => void;
}

export interface Firmware {
  /** The executable image: read-only pflash for split flash, `-bios` for memory mappings. */
  code: string;
  /** The template to copy per instance as its writable UEFI variable store. */
  vars?: string;
  format: string;
  device: "flash" | "memory" | "kernel";
  /** The flash mode: split code + vars, combined (one writable image) or stateless. */
  mode?: "split" | "combined" | "stateless";
  /** The descriptor file, or undefined when found at a well-known path. */
  descriptor?: string;
  features: string[];
}

interface Descriptor {
  "interface-types"?: unknown;
  mapping?: {
    device?: unknown;
    mode?: unknown;
    filename?: unknown;
    executable?: { filename?: unknown; format?: unknown };
    "nvram-template"?: { filename?: unknown; format?: unknown };
  };
  targets?: { architecture?: unknown; machines?: unknown }[];
  features?: unknown;
}

/**
 * The interop spec's directories, lowest priority first: distro packages (and Homebrew's equivalent), then the
 * sysadmin's /etc, then the user's $XDG_CONFIG_HOME. A file name in a higher-priority directory shadows the same
 * name below it.
 */
export function firmwareSearchDirs(opts?: { env?: NodeJS.ProcessEnv }): string[] {
  const env = opts?.env ?? process.env;
  const configHome = env.XDG_CONFIG_HOME || (env.HOME ? path.join(env.HOME, ".config") : undefined);
  return [
    "/home/linuxbrew/.linuxbrew/share/qemu/firmware",
    "/usr/local/share/qemu/firmware",
    "/opt/homebrew/share/qemu/firmware",
    "/usr/share/qemu/firmware",
    "/etc/qemu/firmware",
    ...(configHome === undefined ? [] : [path.join(configHome, "qemu", "firmware")]),
  ];
}

function globToRegExp(glob: string): RegExp {
  const body = glob
    .replace(/[.+^${}()|[\]\\]/g, "\\$&")
    .replace(/\*/g, ".*")
    .replace(/\?/g, ".");
  return new RegExp(`^${body}$`);
}

function machineMatches(globs: unknown, machine: string): boolean {
  if (!Array.isArray(globs)) return false;
  const prefix = MACHINE_ALIASES[machine];
  return globs.some((g) => {
    if (typeof g !== "string") return false;
    // An alias stands for the newest version of its machine, which any "<prefix>*" glob accepts.
    return globToRegExp(g).test(prefix === undefined ? machine : `${prefix}9999.0`);
  });
}

function strings(value: unknown): string[] | undefined {
  return Array.isArray(value) && value.every((v) => typeof v === "string") ? value : undefined;
}

/** Turns a parsed descriptor into a Firmware, or says why it does not fit. */
function toFirmware(
  d: Descriptor,
  file: string,
  want: { arch: string; machine: string; iface: string; features: string[]; exclude: string[] },
): Firmware | string {
  const ifaces = strings(d["interface-types"]);
  const features = strings(d.features ?? []);
  const mapping = d.mapping;
  if (
    ifaces === undefined ||
    features === undefined ||
    !Array.isArray(d.targets) ||
    typeof mapping !== "object"
  ) {
    return "malformed: needs interface-types, mapping, targets and features as in QEMU's docs/interop/firmware.json";
  }
  if (!ifaces.includes(want.iface)) return "other interface";
  if (!d.targets.some((t) => t?.architecture === want.arch && machineMatches(t.machines, want.machine))) {
    return "other target";
  }
  if (!want.features.every((f) => features.includes(f))) return "missing features";
  if (want.exclude.some((f) => features.includes(f))) return "excluded features";

  if (mapping.device === "flash") {
    const code = mapping.executable?.filename;
    const vars = mapping["nvram-template"]?.filename;
    const mode = mapping.mode ?? "split";
    if (typeof code !== "string" || (mode !== "split" && mode !== "combined" && mode !== "stateless")) {
      return "malformed: a flash mapping needs executable.filename and a known mode";
    }
    const format = typeof mapping.executable?.format === "string" ? mapping.executable.format : "raw";
    return {
      code,
      ...(mode === "split" && typeof vars === "string" ? { vars } : {}),
      format,
      device: "flash",
      mode,
      descriptor: file,
      features,
    };
  }
  if (mapping.device === "memory" || mapping.device === "kernel") {
    if (typeof mapping.filename !== "string") return `malformed: a ${mapping.device} mapping needs filename`;
    return { code: mapping.filename, format: "raw", device: mapping.device, descriptor: file, features };
  }
  return `malformed: unknown mapping.device ${JSON.stringify(mapping.device)}`;
}

const WELL_KNOWN_UEFI: Record<GuestArch, { code: string; vars?: string; device?: "memory" }[]> = {
  amd64: [
    { code: "/usr/share/OVMF/OVMF_CODE_4M.fd", vars: "/usr/share/OVMF/OVMF_VARS_4M.fd" }, // Debian, Ubuntu
    { code: "/usr/share/OVMF/OVMF_CODE.fd", vars: "/usr/share/OVMF/OVMF_VARS.fd" },
    { code: "/usr/share/edk2/ovmf/OVMF_CODE.fd", vars: "/usr/share/edk2/ovmf/OVMF_VARS.fd" }, // Fedora
    { code: "/usr/share/edk2/x64/OVMF_CODE.4m.fd", vars: "/usr/share/edk2/x64/OVMF_VARS.4m.fd" }, // Arch
    { code: "/usr/share/qemu/ovmf-x86_64-code.bin", vars: "/usr/share/qemu/ovmf-x86_64-vars.bin" }, // openSUSE
    {
      code: "/opt/homebrew/share/qemu/edk2-x86_64-code.fd",
      vars: "/opt/homebrew/share/qemu/edk2-i386-vars.fd",
    },
    { code: "/usr/local/share/qemu/edk2-x86_64-code.fd", vars: "/usr/local/share/qemu/edk2-i386-vars.fd" },
    { code: "/usr/share/qemu/edk2-x86_64-code.fd", vars: "/usr/share/qemu/edk2-i386-vars.fd" },
    {
      code: "C:/Program Files/qemu/share/edk2-x86_64-code.fd",
      vars: "C:/Program Files/qemu/share/edk2-i386-vars.fd",
    },
  ],
  arm64: [
    {
      code: "/opt/homebrew/share/qemu/edk2-aarch64-code.fd",
      vars: "/opt/homebrew/share/qemu/edk2-arm-vars.fd",
    },
    { code: "/usr/local/share/qemu/edk2-aarch64-code.fd", vars: "/usr/local/share/qemu/edk2-arm-vars.fd" },
    { code: "/usr/share/qemu/edk2-aarch64-code.fd", vars: "/usr/share/qemu/edk2-arm-vars.fd" },
    { code: "/usr/share/AAVMF/AAVMF_CODE.fd", vars: "/usr/share/AAVMF/AAVMF_VARS.fd" }, // Debian, Ubuntu
    {
      code: "/usr/share/edk2/aarch64/QEMU_EFI-pflash.raw",
      vars: "/usr/share/edk2/aarch64/vars-template-pflash.raw",
    },
    { code: "/usr/share/edk2/aarch64/QEMU_CODE.fd", vars: "/usr/share/edk2/aarch64/QEMU_VARS.fd" }, // Arch
    {
      code: "C:/Program Files/qemu/share/edk2-aarch64-code.fd",
      vars: "C:/Program Files/qemu/share/edk2-arm-vars.fd",
    },
    // Older Debian: an image sized for -bios, not for pflash.
    { code: "/usr/share/qemu-efi-aarch64/QEMU_EFI.fd", device: "memory" },
  ],
};

async function descriptorFiles(root: string | undefined, dirs: string[]): Promise<Map<string, string>> {
  const byName = new Map<string, string>();
  for (const dir of dirs) {
    let names: string[];
    try {
      names = await readdir(underRoot(root, dir));
    } catch {
      continue;
    }
    for (const name of names)
      if (name.endsWith(".json")) byName.set(name, path.join(underRoot(root, dir), name));
  }
  return byName;
}

/**
 * Every firmware image that fits, in the interop spec's order (descriptor file names sorted, the first match
 * wins), then the well-known locations distributions and Homebrew use when descriptors are missing.
 */
export async function listFirmware(
  guestArch: string,
  opts?: FirmwareOptions,
): Promise<{ matches: Firmware[]; warnings: string[] }> {
  const arch = normalizeArch(guestArch);
  if (!isGuestArch(arch)) {
    throw new HostDetectError(
      "UNSUPPORTED_ARCH",
      `Unknown guest architecture "${guestArch}": use "amd64" or "arm64".`,
    );
  }
  const warnings: string[] = [];
  const root = opts?.root;
  const iface = opts?.interface ?? "uefi";
  const want = {
    arch: QEMU_ARCH[arch],
    machine: opts?.machine ?? DEFAULT_MACHINE[arch],
    iface,
    features: opts?.features ?? [],
    exclude: opts?.excludeFeatures ?? DEFAULT_EXCLUDED_FEATURES,
  };
  const matches: Firmware[] = [];
  const files = await descriptorFiles(root, firmwareSearchDirs(opts?.env ? { env: opts.env } : undefined));
  for (const name of [...files.keys()].sort()) {
    const file = files.get(name)!;
    let text: string;
    try {
      if ((await stat(file)).size === 0) continue; // an empty file masks a lower-priority one by the same name
      text = await readFile(file, "utf8");
    } catch (error) {
      warnings.push(`skipping firmware descriptor ${file}: ${(error as Error).message}`);
      continue;
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (error) {
      warnings.push(`skipping firmware descriptor ${file}: not JSON (${(error as Error).message})`);
      continue;
    }
    const fit =
      typeof parsed === "object" && parsed !== null
        ? toFirmware(parsed as Descriptor, file, want)
        : "malformed: not a JSON object";
    if (typeof fit === "string") {
      if (fit.startsWith("malformed")) warnings.push(`skipping firmware descriptor ${file}: ${fit}`);
      continue;
    }
    const code = underRoot(root, fit.code);
    if (!(await isFile(code))) {
      warnings.push(`skipping firmware descriptor ${file}: its image ${fit.code} does not exist`);
      continue;
    }
    const vars = fit.vars === undefined ? undefined : underRoot(root, fit.vars);
    if (vars !== undefined && !(await isFile(vars))) {
      warnings.push(
        `skipping firmware descriptor ${file}: its variable store template ${fit.vars} does not exist`,
      );
      continue;
    }
    matches.push({ ...fit, code, ...(vars === undefined ? {} : { vars }) });
  }
  if (iface === "uefi" && want.features.length === 0) {
    for (const known of WELL_KNOWN_UEFI[arch]) {
      const code = underRoot(root, known.code);
      if (!(await isFile(code)) || matches.some((m) => m.code === code)) continue;
      const vars = known.vars === undefined ? undefined : underRoot(root, known.vars);
      if (known.device === "memory") {
        matches.push({ code, format: "raw", device: "memory", features: [] });
      } else if (vars !== undefined && (await isFile(vars))) {
        matches.push({ code, vars, format: "raw", device: "flash", mode: "split", features: [] });
      } else {
        matches.push({ code, format: "raw", device: "flash", mode: "stateless", features: [] });
      }
    }
  }
  return { matches, warnings };
}

/**
 * The first firmware that fits the architecture, machine and features (UEFI by default; for aarch64 this is the
 * UEFI code image plus its variable store template). Skipped descriptors are reported through `onWarning`.
 */
export async function findFirmware(arch: string, opts?: FirmwareOptions): Promise<Firmware | undefined> {
  const { matches, warnings } = await listFirmware(arch, opts);
  const warn =
    opts?.onWarning ?? ((message: string) => process.emitWarning(message, { code: "HOST_DETECT_FIRMWARE" }));
  for (const w of warnings) warn(w);
  return matches[0];
}
