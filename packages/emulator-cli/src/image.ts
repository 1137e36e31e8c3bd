import { existsSync, readFileSync } from "node:fs";
import { isAbsolute, join } from "node:path";
import { EmulatorError } from "./errors.js";
import type { ServiceSpec } from "./ports.js";

export const SECRET_NAMES = [
  "STACK_PUBLISHABLE_CLIENT_KEY",
  "STACK_SECRET_SERVER_KEY",
  "STACK_SUPER_SECRET_ADMIN_KEY",
  "CRON_SECRET",
] as const;

export interface ImageManifest {
  schema: 1;
  name: string;
  arch: "amd64" | "arm64";
  digest: string;
  boot: { kernel: string; initrd?: string; append?: string } | { firmware: "bios" | "uefi" };
  disk: string;
  memoryMiB: number;
  cpus: number;
  configIso: { volumeId: string };
  services: ServiceSpec[];
  guest: {
    rotateSecrets: string;
    applyConfig?: string;
    waitReady?: string;
    /** How long a guest command (rotation, config) and the health check after a resume may take; default 30. */
    timeoutSeconds?: number;
  };
  secrets: string[];
}

/** An image on disk: its directory and its manifest, with every file path made absolute. */
export interface Image {
  dir: string;
  manifest: ImageManifest;
  diskPath: string;
  kernelPath?: string;
  initrdPath?: string;
}

function fail(dir: string, problem: string): never {
  throw new EmulatorError(
    "INVALID_IMAGE",
    `${join(dir, "image.json")}: ${problem}`,
    "rebuild or re-download the image (stack-emulator pull, or --image dev to rebuild the dev image)",
  );
}

export function loadImage(dir: string): Image {
  const manifestPath = join(dir, "image.json");
  if (!existsSync(manifestPath)) {
    throw new EmulatorError(
      "IMAGE_NOT_FOUND",
      `no image at ${dir} (image.json missing)`,
      "pass --image dev, --image release, --image pr:<n>, --image run:<id> or a directory holding image.json",
    );
  }
  let manifest: ImageManifest;
  try {
    manifest = JSON.parse(readFileSync(manifestPath, "utf8"));
  } catch (error) {
    fail(dir, `not valid JSON (${(error as Error).message})`);
  }
  if (manifest.schema !== 1) fail(dir, `unsupported schema ${String(manifest.schema)}`);
  for (const key of ["name", "digest", "disk"] as const) {
    if (typeof manifest[key] !== "string" || manifest[key] === "")
      fail(dir, `"${key}" must be a non-empty string`);
  }
  if (!Number.isInteger(manifest.memoryMiB) || manifest.memoryMiB < 64)
    fail(dir, '"memoryMiB" must be >= 64');
  if (!Number.isInteger(manifest.cpus) || manifest.cpus < 1) fail(dir, '"cpus" must be >= 1');
  if (!Array.isArray(manifest.services) || manifest.services.length === 0) fail(dir, '"services" is empty');
  if (!manifest.guest?.rotateSecrets) fail(dir, '"guest.rotateSecrets" is missing');
  const abs = (file: string) => (isAbsolute(file) ? file : join(dir, file));
  const image: Image = { dir, manifest, diskPath: abs(manifest.disk) };
  if ("kernel" in manifest.boot) {
    image.kernelPath = abs(manifest.boot.kernel);
    if (manifest.boot.initrd) image.initrdPath = abs(manifest.boot.initrd);
  }
  for (const file of [image.diskPath, image.kernelPath, image.initrdPath]) {
    if (file && !existsSync(file)) fail(dir, `${file} is missing`);
  }
  return image;
}
