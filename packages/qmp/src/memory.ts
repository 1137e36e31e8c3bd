import { QmpError } from "./errors.js";

export interface MemoryBackendOptions {
  /** RAM block name; a state saved with one id only restores into a QEMU using the same id. */
  id: string;
  /**
   * The RAM file (`mem-path`); QEMU creates it when missing. Without one, anonymous memory (`memory-backend-ram`):
   * named like the file's, so a stream saved from either restores into the other.
   */
  path?: string;
  sizeMiB: number;
  /** `true` to capture (writes go to the file), `false` to restore (copy-on-write, the file is never written). */
  share: boolean;
}

export interface MemoryBackendParts {
  /** `["-object", "memory-backend-file,..."]` (or `memory-backend-ram,...`) */
  objectArgs: string[];
  /** `memory-backend=<id>`: a `-machine` property, to append to the caller's own `-machine` value. */
  machineProperty: string;
}

/** QEMU option syntax: a comma inside a value is written as two commas. */
function optionValue(value: string): string {
  return value.replaceAll(",", ",,");
}

export function memoryBackend(opts: MemoryBackendOptions): MemoryBackendParts {
  if (!/^[A-Za-z][A-Za-z0-9._-]*$/.test(opts.id)) {
    throw new QmpError(
      "UNSUPPORTED",
      `memory backend id ${JSON.stringify(opts.id)} is not a valid QEMU id (a letter, then letters, digits, . _ -)`,
    );
  }
  if (!Number.isInteger(opts.sizeMiB) || opts.sizeMiB <= 0) {
    throw new QmpError(
      "UNSUPPORTED",
      `memory size must be a positive whole number of MiB, got ${opts.sizeMiB}`,
    );
  }
  const object = (
    opts.path === undefined
      ? ["memory-backend-ram", `id=${opts.id}`, `size=${opts.sizeMiB}M`]
      : [
          "memory-backend-file",
          `id=${opts.id}`,
          `mem-path=${optionValue(opts.path)}`,
          `size=${opts.sizeMiB}M`,
          `share=${opts.share ? "on" : "off"}`,
        ]
  ).join(",");
  return { objectArgs: ["-object", object], machineProperty: `memory-backend=${opts.id}` };
}

/**
 * QEMU arguments that put guest RAM in a file: `-object memory-backend-file,...` and `-machine memory-backend=<id>`.
 * QEMU merges repeated `-machine` options, so these can follow the caller's own `-machine pc,accel=...`;
 * pass `-m <sizeMiB>` too (or none), since a different `-m` is an error.
 */
export function memoryBackendArgs(opts: MemoryBackendOptions): string[] {
  const parts = memoryBackend(opts);
  return [...parts.objectArgs, "-machine", parts.machineProperty];
}
