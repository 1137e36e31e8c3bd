import path from "node:path";
import { HostDetectError } from "./errors.js";
import { isExecutableFile, pathDirs, underRoot } from "./fsroot.js";
import { type GuestArch, type HostOs, hostInfo, isGuestArch, normalizeArch } from "./host.js";
import { detectPackageManager, installCommand } from "./packages.js";

/** Per-architecture overrides of the system emulator, and one for qemu-img. */
export const QEMU_ENV: Record<GuestArch, string> = {
  amd64: "EMULATOR_QEMU_AMD64",
  arm64: "EMULATOR_QEMU_ARM64",
};
export const QEMU_IMG_ENV = "EMULATOR_QEMU_IMG";

const SYSTEM_BINARY: Record<GuestArch, string> = {
  amd64: "qemu-system-x86_64",
  arm64: "qemu-system-aarch64",
};

// Homebrew (Apple silicon, Intel, Linuxbrew), MacPorts, distro and local installs, in the order a user's own
// install should win over the system's.
const WELL_KNOWN_DIRS: Record<HostOs, string[]> = {
  darwin: ["/opt/homebrew/bin", "/usr/local/bin", "/opt/local/bin"],
  linux: ["/usr/local/bin", "/home/linuxbrew/.linuxbrew/bin", "/usr/bin", "/snap/bin"],
  windows: ["C:/Program Files/qemu"],
  unknown: ["/usr/local/bin", "/usr/bin"],
};

export interface FindQemuOptions {
  env?: NodeJS.ProcessEnv;
  /** Stands in for `/`: PATH entries, overrides and well-known locations are all resolved under it. */
  root?: string;
  os?: string;
}

export interface QemuBinaries {
  system: string;
  img?: string;
  /** Where `system` came from: the override variable, PATH, or a well-known location. */
  source: "env" | "path" | "well-known";
}

function exeName(name: string, os: HostOs): string {
  return os === "windows" && !name.toLowerCase().endsWith(".exe") ? `${name}.exe` : name;
}

async function firstExecutable(candidates: string[]): Promise<string | undefined> {
  for (const c of candidates) if (await isExecutableFile(c)) return c;
  return undefined;
}

/** An override is a path, or a bare name looked up on PATH; a set-but-broken override is an error, not ignored. */
async function resolveOverride(
  variable: string,
  value: string,
  ctx: { env: NodeJS.ProcessEnv; root?: string; os: HostOs },
): Promise<string> {
  const candidates =
    value.includes("/") || value.includes("\\")
      ? [underRoot(ctx.root, path.resolve(value))]
      : pathDirs(ctx.env, ctx.os).map((d) => underRoot(ctx.root, path.join(d, exeName(value, ctx.os))));
  const found = await firstExecutable(candidates);
  if (found === undefined) {
    throw new HostDetectError(
      "QEMU_OVERRIDE_INVALID",
      `${variable}=${value} is not an executable file: point it at a QEMU binary or unset it to search PATH.`,
      { path: value },
    );
  }
  return found;
}

async function search(
  name: string,
  ctx: { env: NodeJS.ProcessEnv; root?: string; os: HostOs },
): Promise<{ path: string; source: "path" | "well-known" } | undefined> {
  const file = exeName(name, ctx.os);
  const onPath = await firstExecutable(
    pathDirs(ctx.env, ctx.os).map((d) => underRoot(ctx.root, path.join(d, file))),
  );
  if (onPath !== undefined) return { path: onPath, source: "path" };
  const known = await firstExecutable(
    WELL_KNOWN_DIRS[ctx.os].map((d) => underRoot(ctx.root, path.join(d, file))),
  );
  return known === undefined ? undefined : { path: known, source: "well-known" };
}

/**
 * Finds the system emulator for a guest architecture and the qemu-img that goes with it (preferring the one
 * installed next to the emulator, so both come from the same QEMU). qemu-img is optional here; `doctor` reports it.
 */
export async function findQemu(guestArch: string, opts?: FindQemuOptions): Promise<QemuBinaries> {
  const arch = normalizeArch(guestArch);
  if (!isGuestArch(arch)) {
    throw new HostDetectError(
      "UNSUPPORTED_ARCH",
      `Unknown guest architecture "${guestArch}": use "amd64" or "arm64".`,
    );
  }
  const env = opts?.env ?? process.env;
  const os = hostInfo({ platform: opts?.os ?? process.platform }).os;
  const ctx = opts?.root === undefined ? { env, os } : { env, os, root: opts.root };

  let system: string;
  let source: QemuBinaries["source"];
  const override = env[QEMU_ENV[arch]];
  if (override !== undefined && override !== "") {
    system = await resolveOverride(QEMU_ENV[arch], override, ctx);
    source = "env";
  } else {
    let hit = await search(SYSTEM_BINARY[arch], ctx);
    // RHEL and CentOS Stream ship only /usr/libexec/qemu-kvm, which runs the host's own architecture.
    if (hit === undefined && os === "linux" && hostInfo().arch === arch) {
      const kvm = await firstExecutable([underRoot(ctx.root, "/usr/libexec/qemu-kvm")]);
      if (kvm !== undefined) hit = { path: kvm, source: "well-known" };
    }
    if (hit === undefined) {
      const fix = installCommand(detectPackageManager(ctx), [`qemu-${arch}`, "qemu-img"]);
      throw new HostDetectError(
        "QEMU_NOT_FOUND",
        `${SYSTEM_BINARY[arch]} was not found on PATH or in ${WELL_KNOWN_DIRS[os].join(", ")}. ` +
          `Install it (${fix}) or set ${QEMU_ENV[arch]} to its path.`,
      );
    }
    system = hit.path;
    source = hit.source;
  }

  const imgOverride = env[QEMU_IMG_ENV];
  let img: string | undefined;
  if (imgOverride !== undefined && imgOverride !== "") {
    img = await resolveOverride(QEMU_IMG_ENV, imgOverride, ctx);
  } else {
    img =
      (await firstExecutable([path.join(path.dirname(system), exeName("qemu-img", os))])) ??
      (await search("qemu-img", ctx))?.path;
  }
  return img === undefined ? { system, source } : { system, img, source };
}
