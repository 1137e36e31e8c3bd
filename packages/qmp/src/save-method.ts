import type { QmpClient } from "./client.js";
import { QmpError } from "./errors.js";
import type { QemuVersionTriple } from "./types.js";

/**
 * How VM state is written, best first:
 * - `x-ignore-shared`: guest RAM lives in a `memory-backend-file,share=on`; only device state is streamed.
 *   Restore maps the same file with `share=off` (copy-on-write), so the file stays a reusable template.
 * - `mapped-ram`: RAM pages at fixed offsets of a `file:` target (QEMU >= 9.0).
 * - `file`: a plain stream to a `file:` target (QEMU >= 8.2).
 * - `exec`: a stream piped through `/bin/sh -c "cat > path"` (every QEMU version).
 */
export type SaveMethod = "x-ignore-shared" | "mapped-ram" | "file" | "exec";

interface MethodRequirement {
  capability?: string;
  minVersion?: [number, number];
}

const REQUIREMENTS: Record<SaveMethod, MethodRequirement> = {
  "x-ignore-shared": { capability: "x-ignore-shared", minVersion: [4, 0] },
  "mapped-ram": { capability: "mapped-ram", minVersion: [9, 0] },
  file: { minVersion: [8, 2] },
  exec: {},
};

/** What the running QEMU can do, as far as saving is concerned. */
export interface Abilities {
  version: QemuVersionTriple;
  capabilities: Set<string>;
  /** Some guest RAM is a memory backend with share=on. */
  sharedRam: boolean;
}

function atLeast(v: QemuVersionTriple, [major, minor]: [number, number]): boolean {
  return v.major > major || (v.major === major && v.minor >= minor);
}

/** Single-quotes `s` for `/bin/sh`, which is how QEMU runs an `exec:` migration command. */
export function shellQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

/** The migration URI that writes (`out`) or reads (`in`) `file` with `method`. */
export function migrationUri(method: SaveMethod, file: string, direction: "in" | "out"): string {
  if (method === "file" || method === "mapped-ram") {
    // QEMU parses `file:<path>[,offset=N]`, so a comma in the path would be taken as an option.
    if (file.includes(",")) {
      throw new QmpError("UNSUPPORTED", `the ${method} method cannot use a path containing a comma: ${file}`);
    }
    return `file:${file}`;
  }
  return direction === "out" ? `exec:cat > ${shellQuote(file)}` : `exec:cat ${shellQuote(file)}`;
}

/** Methods whose state QEMU opens by path (`file:`), so it cannot come through an inherited descriptor. */
export function readsStateByPath(method: SaveMethod): boolean {
  return method === "file" || method === "mapped-ram";
}

export async function abilities(q: QmpClient): Promise<Abilities> {
  const [version, caps, memdevs] = await Promise.all([
    q.execute<{ qemu: QemuVersionTriple }>("query-version"),
    q.execute<{ capability: string }[]>("query-migrate-capabilities"),
    q.execute<{ share?: boolean }[]>("query-memdev"),
  ]);
  return {
    version: version.qemu,
    capabilities: new Set(caps.map((c) => c.capability)),
    sharedRam: memdevs.some((m) => m.share === true),
  };
}

function unsupportedReason(method: SaveMethod, a: Abilities): string | undefined {
  const req = REQUIREMENTS[method];
  if (req.minVersion && !atLeast(a.version, req.minVersion)) {
    return `needs QEMU >= ${req.minVersion.join(".")}`;
  }
  if (req.capability && !a.capabilities.has(req.capability)) {
    return `needs the ${req.capability} migration capability`;
  }
  return undefined;
}

export function assertSupported(method: SaveMethod, a: Abilities): void {
  if (!(method in REQUIREMENTS)) {
    throw new QmpError("UNSUPPORTED", `unknown save method ${JSON.stringify(method)}`);
  }
  const reason = unsupportedReason(method, a);
  if (reason) {
    const { major, minor, micro } = a.version;
    throw new QmpError(
      "UNSUPPORTED",
      `save method ${method} is unsupported on QEMU ${major}.${minor}.${micro}: it ${reason}; ` +
        "use chooseSaveMethod() to pick one this QEMU supports (exec works everywhere)",
    );
  }
}

/** What decides the save method, as a probe reports it before any VM runs (host-detect's `probeQemu`). */
export interface SaveMethodInputs {
  version: QemuVersionTriple;
  migrationCapabilities: readonly string[];
  /** Guest RAM is (or will be) a `memory-backend-file,share=on`: the precondition of `x-ignore-shared`. */
  sharedRam: boolean;
}

/**
 * The one policy for how to save a VM: RAM left in its shared file (`x-ignore-shared`) when it can be, else the
 * fastest stream this QEMU writes: `mapped-ram` (>= 9.0), `file:` (>= 8.2), `exec:` (everywhere).
 */
export function bestSaveMethod(inputs: SaveMethodInputs): SaveMethod {
  const a: Abilities = {
    version: inputs.version,
    capabilities: new Set(inputs.migrationCapabilities),
    sharedRam: inputs.sharedRam,
  };
  const order: SaveMethod[] = a.sharedRam
    ? ["x-ignore-shared", "mapped-ram", "file", "exec"]
    : ["mapped-ram", "file", "exec"];
  return order.find((m) => unsupportedReason(m, a) === undefined) ?? "exec";
}

/**
 * The best method the running QEMU supports. `sharedMemoryBackend` says the caller put guest RAM in a
 * `memory-backend-file,share=on` (see `memoryBackendArgs`) to allow `x-ignore-shared`; it is only chosen when
 * `query-memdev` confirms a shared backend.
 */
export async function chooseSaveMethod(
  q: QmpClient,
  opts: { sharedMemoryBackend: boolean },
): Promise<SaveMethod> {
  const a = await abilities(q);
  return bestSaveMethod({
    version: a.version,
    migrationCapabilities: [...a.capabilities],
    sharedRam: opts.sharedMemoryBackend && a.sharedRam,
  });
}
