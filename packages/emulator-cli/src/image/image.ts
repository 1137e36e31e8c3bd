import { existsSync, readFileSync } from "node:fs";
import { isAbsolute, join } from "node:path";
import { EmulatorError } from "../core/errors.js";

/**
 * What an image is to the host: its hardware and how it boots. What runs inside (config disk, ports, rotation) is
 * the guest contract (contract.ts), the same for every image. Schema 1 manifests described a contract of this
 * project's own and are refused: their images are rebuilt.
 */
export interface ImageManifest {
  schema: 2;
  name: string;
  arch: "amd64" | "arm64";
  digest: string;
  boot: { kernel: string; initrd?: string; append?: string } | { firmware: "bios" | "uefi" };
  disk: string;
  memoryMiB: number;
  cpus: number;
  /** How long a guest command (rotation) and the health check after a resume may take, in seconds. */
  timeoutSeconds?: number;
}

/** An image on disk: its directory and its manifest, with every file path made absolute. */
export interface Image {
  dir: string;
  manifest: ImageManifest;
  diskPath: string;
  kernelPath?: string;
  initrdPath?: string;
}

const IMAGE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

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
  if ((manifest.schema as number) === 1) {
    fail(dir, "an image of an older version of this project (its guest speaks another contract); rebuild it");
  }
  if (manifest.schema !== 2) fail(dir, `unsupported schema ${String(manifest.schema)}`);
  for (const key of ["name", "digest", "disk"] as const) {
    if (typeof manifest[key] !== "string" || manifest[key] === "")
      fail(dir, `"${key}" must be a non-empty string`);
  }
  // The name is a directory under snapshots/: one path component of safe characters, never `..` or a path.
  if (!IMAGE_NAME.test(manifest.name)) {
    fail(
      dir,
      `"name" ${JSON.stringify(manifest.name)} must be 1-128 letters, digits, dots, dashes or underscores`,
    );
  }
  if (!Number.isInteger(manifest.memoryMiB) || manifest.memoryMiB < 64)
    fail(dir, '"memoryMiB" must be >= 64');
  if (!Number.isInteger(manifest.cpus) || manifest.cpus < 1) fail(dir, '"cpus" must be >= 1');
  if (manifest.arch !== "amd64" && manifest.arch !== "arm64") fail(dir, '"arch" must be amd64 or arm64');
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

/**
 * The image with the guest's RAM and vCPUs as the settings say (EMULATOR_RAM, EMULATOR_CPUS, the original's
 * variables); the image's own values otherwise. Both are part of a snapshot's fingerprint, so a change recaptures.
 */
export function withMachineSettings(image: Image, machine: { memoryMiB?: number; cpus?: number }): Image {
  if (machine.memoryMiB === undefined && machine.cpus === undefined) return image;
  return { ...image, manifest: { ...image.manifest, ...machine } };
}
