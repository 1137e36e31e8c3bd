import { execFile } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { promisify } from "node:util";
import { hostInfo } from "@stack/host-detect";
import { EmulatorError } from "../core/errors.js";
import { writeFileAtomic } from "../core/fs-atomic.js";
import { packageFile } from "../core/package-files.js";
import type { HomeLayout } from "../core/paths.js";
import type { PullSettings, Settings } from "../core/settings.js";
import { type Image, loadImage } from "./image.js";

const run = promisify(execFile);

export type ImageSelector =
  | { kind: "dev" }
  | { kind: "release"; tag?: string }
  | { kind: "pr"; number: number }
  | { kind: "run"; id: number }
  | { kind: "path"; path: string };

export function parseImageSelector(value: string): ImageSelector {
  const text = value.trim();
  if (text === "dev") return { kind: "dev" };
  if (text === "release") return { kind: "release" };
  if (text.startsWith("release:") && text.length > 8) return { kind: "release", tag: text.slice(8) };
  const numbered = /^(pr|run):(\d+)$/.exec(text);
  if (numbered) {
    const n = Number(numbered[2]);
    return numbered[1] === "pr" ? { kind: "pr", number: n } : { kind: "run", id: n };
  }
  if (text.includes("/") || text.startsWith(".")) return { kind: "path", path: resolve(text) };
  throw new EmulatorError(
    "UNKNOWN_IMAGE",
    `unknown image ${JSON.stringify(value)}`,
    "use dev, release, release:<tag>, pr:<number>, run:<id>, or a path to a directory holding image.json",
  );
}

export function describeSelector(selector: ImageSelector): string {
  switch (selector.kind) {
    case "dev":
      return "dev";
    case "release":
      return selector.tag ? `release:${selector.tag}` : "release";
    case "pr":
      return `pr:${selector.number}`;
    case "run":
      return `run:${selector.id}`;
    case "path":
      return selector.path;
  }
}

/** Where images that this CLI downloads or builds live: one directory per image under `images/`. */
export function storedImageDir(layout: HomeLayout, name: string): string {
  return join(layout.images, name);
}

const currentFile = (layout: HomeLayout) => join(layout.images, "current");

/**
 * The image the last successful start or pull used, and its architecture: a plain `start` keeps using both (the
 * dev, release, pr and run images exist once per architecture).
 */
export interface CurrentImage {
  selector: string;
  arch?: "amd64" | "arm64";
}

export function readCurrentImage(layout: HomeLayout): CurrentImage | undefined {
  let text: string;
  try {
    text = readFileSync(currentFile(layout), "utf8");
  } catch {
    return undefined;
  }
  // Line 1: the selector; then `arch=<arch>` (files written before it have the selector only).
  const [selector, ...rest] = text.split("\n").map((line) => line.trim());
  if (!selector) return undefined;
  const arch = rest.find((line) => line.startsWith("arch="))?.slice("arch=".length);
  return arch === "amd64" || arch === "arm64" ? { selector, arch } : { selector };
}

export function writeCurrentImage(
  layout: HomeLayout,
  selector: ImageSelector,
  arch: "amd64" | "arm64",
): void {
  mkdirSync(layout.images, { recursive: true });
  writeFileAtomic(currentFile(layout), `${describeSelector(selector)}\narch=${arch}\n`);
}

function devImageBuilder(settings: Settings): string {
  // The build copies guest/build-dev-image and its inputs (guest/dev) into this package, installed or not.
  return settings.devImageBuilder ?? packageFile("guest/build-dev-image");
}

function newestMtime(path: string): number {
  const info = statSync(path);
  if (!info.isDirectory()) return info.mtimeMs;
  let newest = info.mtimeMs;
  for (const name of readdirSync(path)) newest = Math.max(newest, newestMtime(join(path, name)));
  return newest;
}

/**
 * Whether the built dev image is at least as new as the builder and the guest files it packs. A stat walk takes
 * milliseconds, where asking the builder (which hashes every input) would add a second to every start.
 */
function devImageIsCurrent(builder: string, out: string): boolean {
  try {
    const built = statSync(join(out, "image.json")).mtimeMs;
    return newestMtime(builder) <= built && newestMtime(join(dirname(builder), "dev")) <= built;
  } catch {
    return false;
  }
}

/** Builds the offline dev image, or reuses it when nothing it is built from changed since. */
export async function ensureDevImage(
  settings: Settings,
  options: { arch?: "amd64" | "arm64"; rebuild?: boolean; onBuild?: () => void } = {},
): Promise<Image> {
  const { layout } = settings;
  const arch = options.arch ?? "amd64";
  const builder = devImageBuilder(settings);
  if (!existsSync(builder)) {
    throw new EmulatorError(
      "DEV_IMAGE_UNAVAILABLE",
      `the dev image builder ${builder} is not here`,
      settings.devImageBuilder === undefined
        ? "this copy of stack-emulator lacks its guest/ folder: reinstall it, or in the repository run pnpm build"
        : "STACK_EMULATOR_DEV_IMAGE_BUILDER names a file that does not exist: point it at a guest/build-dev-image",
    );
  }
  // The amd64 image keeps the name it always had, so existing homes find their snapshots.
  const out = storedImageDir(layout, arch === "amd64" ? "dev" : `dev-${arch}`);
  if (!options.rebuild && devImageIsCurrent(builder, out)) return loadImage(out);
  options.onBuild?.();
  try {
    await run(builder, ["--arch", arch, "--out", out, "--json"], {
      env: settings.hostEnv,
      maxBuffer: 16 * 1024 * 1024,
    });
  } catch (error) {
    const stderr = String((error as { stderr?: string }).stderr ?? "").trim();
    throw new EmulatorError(
      "DEV_IMAGE_BUILD_FAILED",
      `building the dev image failed: ${stderr.split("\n").slice(-3).join(" | ") || (error as Error).message}`,
      `run ${builder} --arch ${arch} --out ${out} yourself to see the whole output; it needs apt-get on a Debian/Ubuntu host`,
    );
  }
  return loadImage(out);
}

/** Emulator releases are tagged `emulator-<branch>-latest` or `emulator-<branch>-<yyyymmdd>-<sha8>`. */
export const RELEASE_PREFIX = "emulator-";
export const DEFAULT_REPO = "stack-auth/stack-auth";
/** The workflow whose runs build images for pull requests and runs (`qemu-emulator-build.yaml` in the original). */
export const DEFAULT_WORKFLOW = "qemu-emulator-build.yaml";

/** The parts of the pull settings that pick an image. */
export type PullFlags = Pick<PullSettings, "tag" | "branch" | "pr" | "run" | "arch">;

function positiveInt(value: string, flag: string): number {
  if (!/^\d+$/.test(value) || Number(value) < 1) {
    throw new EmulatorError(
      "INVALID_ARGUMENT",
      `${flag} ${JSON.stringify(value)} is not a positive number`,
      `pass ${flag} <number>`,
    );
  }
  return Number(value);
}

export function selectorFromFlags(flags: PullFlags): ImageSelector | undefined {
  const given = [flags.tag, flags.branch, flags.pr, flags.run].filter((v) => v !== undefined);
  if (given.length > 1) {
    throw new EmulatorError(
      "INVALID_ARGUMENT",
      "--tag, --branch, --pr and --run pick different images",
      "pass only one of them",
    );
  }
  if (flags.pr !== undefined) return { kind: "pr", number: positiveInt(flags.pr, "--pr") };
  if (flags.run !== undefined) return { kind: "run", id: positiveInt(flags.run, "--run") };
  if (flags.tag !== undefined) return { kind: "release", tag: flags.tag };
  if (flags.branch !== undefined) {
    if (!/^[A-Za-z0-9._/-]{1,100}$/.test(flags.branch)) {
      throw new EmulatorError(
        "INVALID_ARGUMENT",
        `--branch ${JSON.stringify(flags.branch)} is not a branch name`,
        "pass the branch whose emulator builds to use, such as dev or main",
      );
    }
    return { kind: "release", tag: `${RELEASE_PREFIX}${flags.branch}-latest` };
  }
  return undefined;
}

export function archOf(flags: PullFlags): "amd64" | "arm64" {
  if (flags.arch) return flags.arch;
  return hostInfo().arch === "arm64" ? "arm64" : "amd64";
}

export function imageName(selector: ImageSelector, arch: string): string {
  switch (selector.kind) {
    case "release":
      return `release-${(selector.tag ?? "emulator-dev-latest").replace(/[^A-Za-z0-9._-]/g, "_")}-${arch}`;
    case "pr":
      return `pr-${selector.number}-${arch}`;
    case "run":
      return `run-${selector.id}-${arch}`;
    default:
      throw new EmulatorError("UNKNOWN_IMAGE", `${selector.kind} images are not downloaded`);
  }
}

/** A previously pulled image for this selector, if one is stored. */
export function storedImage(
  layout: HomeLayout,
  selector: ImageSelector,
  flags: PullFlags = {},
): Image | undefined {
  const dir = storedImageDir(layout, imageName(selector, archOf(flags)));
  return existsSync(join(dir, "image.json")) ? loadImage(dir) : undefined;
}
