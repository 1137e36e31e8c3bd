import { createHash, randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readFile, realpath, rename, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { QmpClient } from "@stack/qmp";
import { HostDetectError } from "./errors.js";
import { runWithDeadline, start } from "./proc.js";

export interface QemuVersion {
  major: number;
  minor: number;
  micro: number;
  /** The version as the binary prints it, distribution suffix included, e.g. `7.2.22 (Debian 1:7.2+dfsg-7)`. */
  text: string;
}

export interface QemuAbilities {
  version: QemuVersion;
  /** Accelerators compiled into the binary (`kvm`, `hvf`, `whpx`, `tcg`, ...); not whether the host can use them. */
  accelerators: string[];
  migrationCapabilities: string[];
  /** `migrate` accepts a `file:` destination (QEMU >= 8.2). */
  fileMigration: boolean;
  memoryBackendFile: boolean;
}

export interface ProbeOptions {
  /** Deadline for the whole probe, both QEMU runs included. */
  timeoutMs?: number;
  /** A directory for a cache that outlives this process; without it results are cached in memory only. */
  cacheDir?: string;
}

export const DEFAULT_PROBE_TIMEOUT_MS = 20_000;
const CACHE_SCHEMA = 1;
// `-machine none` starts no guest, so the probe needs no firmware, disk or accelerator access; QEMU picks its
// default accelerator and falls back to tcg on its own when /dev/kvm is unusable.
const PROBE_ARGS = ["-machine", "none", "-nodefaults", "-no-user-config", "-display", "none"];

/** Parses `qemu-system-* -version` output; undefined when it is not QEMU's. */
export function parseQemuVersion(output: string): QemuVersion | undefined {
  const match = output.match(/^QEMU (?:PC )?emulator version ((\d+)\.(\d+)(?:\.(\d+))?[^\r\n]*)$/m);
  if (match === null) return undefined;
  return {
    major: Number(match[2]),
    minor: Number(match[3]),
    micro: Number(match[4] ?? 0),
    text: match[1]!.trim(),
  };
}

/** Runs `<binary> -version` and parses it: the cheap check that a binary is a QEMU at all. */
export async function qemuVersion(binary: string, opts?: { timeoutMs?: number }): Promise<QemuVersion> {
  const { code, stdout, stderr } = await runWithDeadline(
    binary,
    ["-version"],
    opts?.timeoutMs ?? DEFAULT_PROBE_TIMEOUT_MS,
  );
  const version = parseQemuVersion(stdout);
  if (version === undefined || code !== 0) {
    const shown = (stdout + stderr).trim().slice(0, 200) || "(nothing)";
    throw new HostDetectError(
      "BAD_VERSION",
      `${binary} -version exited with ${code} and printed ${JSON.stringify(shown)} instead of "QEMU emulator version X.Y.Z": ` +
        "it is not a working QEMU system emulator; reinstall QEMU or point the override at the real binary.",
      { path: binary },
    );
  }
  return version;
}

interface SchemaEntry {
  "meta-type"?: string;
  values?: string[];
  members?: { name?: string }[];
}

/**
 * `file:` migration arrived with the MigrationAddressType enum (socket, exec, rdma, file) in 8.2. Introspection hides
 * type names but not enum values, so the enum is recognised by its values; without a schema, the version decides.
 */
export function hasFileMigration(schema: SchemaEntry[] | undefined, version: QemuVersion): boolean {
  if (schema === undefined) return version.major > 8 || (version.major === 8 && version.minor >= 2);
  return schema.some((entry) => {
    if (entry["meta-type"] !== "enum") return false;
    const values = entry.values ?? entry.members?.map((m) => m.name ?? "") ?? [];
    return values.includes("socket") && values.includes("exec") && values.includes("file");
  });
}

async function probeUncached(binary: string, timeoutMs: number): Promise<QemuAbilities> {
  const deadline = Date.now() + timeoutMs;
  const left = () => Math.max(1, deadline - Date.now());
  const dir = await mkdtemp(path.join(tmpdir(), "host-detect-"));
  const socket = path.join(dir, "qmp.sock");
  // Both runs start at once: QEMU's start-up dominates the probe, and a bad -version stops the QMP run early.
  const versionRun = qemuVersion(binary, { timeoutMs });
  const proc = start(binary, [...PROBE_ARGS, "-qmp", `unix:${socket},server=on,wait=off`]);
  const abort = new AbortController();
  let failure: HostDetectError | undefined;
  let finished = false;
  const fail = (error: HostDetectError) => {
    if (finished) return;
    failure ??= error;
    abort.abort();
    proc.kill();
  };
  versionRun.catch(fail);
  const timedOut = () =>
    new HostDetectError(
      "PROBE_TIMEOUT",
      `${binary} did not answer QMP queries within ${timeoutMs} ms and was killed: check that it runs ` +
        `(\`${binary} -machine none -display none\`), or raise the probe timeout on a very slow machine.`,
      { path: binary },
    );
  const timer = setTimeout(() => fail(timedOut()), left());
  proc.exited.then(
    ({ code, signal, stderr }) =>
      fail(
        new HostDetectError(
          "QEMU_NOT_RUNNABLE",
          `${binary} exited (${signal ?? `code ${code}`}) during the capability probe: ${stderr || "no error output"}.`,
          { path: binary },
        ),
      ),
    fail,
  );

  let client: QmpClient | undefined;
  try {
    client = await QmpClient.connect(socket, { timeoutMs: left(), signal: abort.signal });
    const q = client;
    const run = <T>(command: string, args?: object) =>
      q.execute<T>(command, args, { timeoutMs: left(), signal: abort.signal });
    const qmpVersion = await run<{ qemu: { major: number; minor: number; micro: number } }>("query-version");
    const [version, accels, backends, caps, schema] = await Promise.all([
      versionRun,
      run<{ name: string }[]>("qom-list-types", { implements: "accel", abstract: false }),
      run<{ name: string }[]>("qom-list-types", { implements: "memory-backend", abstract: false }),
      run<{ capability: string }[]>("query-migrate-capabilities"),
      // The schema is only worth its ~200 KB when `file:` migration is possible at all.
      qmpVersion.qemu.major >= 8 ? run<SchemaEntry[]>("query-qmp-schema").catch(() => undefined) : [],
    ]);
    const exact = { ...version, ...qmpVersion.qemu };
    return {
      version: exact,
      accelerators: accels
        .map((t) => t.name)
        .filter((n) => n.endsWith("-accel"))
        .map((n) => n.slice(0, -"-accel".length))
        .filter((n) => n !== "qtest"),
      migrationCapabilities: caps.map((c) => c.capability),
      fileMigration: hasFileMigration(schema, exact),
      memoryBackendFile: backends.some((t) => t.name === "memory-backend-file"),
    };
  } catch (error) {
    // A binary that is not QEMU also fails the QMP run; its -version verdict is the clearer error.
    await versionRun;
    // The QMP client's own deadline is the probe's: whichever timer fires first, a timeout is a timeout.
    if (failure === undefined && Date.now() >= deadline) fail(timedOut());
    if (failure !== undefined) throw failure;

    throw new HostDetectError(
      "PROBE_FAILED",
      `Probing ${binary} over QMP failed: ${(error as Error).message}. Check that it is a QEMU system emulator >= 4.0.`,
      { path: binary, cause: error },
    );
  } finally {
    finished = true;
    clearTimeout(timer);
    await client?.close().catch(() => undefined);
    await proc.stop();
    await versionRun.catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
}

interface Identity {
  path: string;
  mtimeMs: number;
  size: number;
}

const memoryCache = new Map<string, { identity: Identity; result: Promise<QemuAbilities> }>();

function sameIdentity(a: Identity, b: Identity): boolean {
  return a.path === b.path && a.mtimeMs === b.mtimeMs && a.size === b.size;
}

function isAbilities(value: unknown): value is QemuAbilities {
  const v = value as QemuAbilities | undefined;
  return (
    typeof v?.version?.major === "number" &&
    typeof v.version.text === "string" &&
    Array.isArray(v.accelerators) &&
    Array.isArray(v.migrationCapabilities) &&
    typeof v.fileMigration === "boolean" &&
    typeof v.memoryBackendFile === "boolean"
  );
}

function diskCachePath(cacheDir: string, identity: Identity): string {
  const key = createHash("sha256").update(identity.path).digest("hex").slice(0, 24);
  return path.join(cacheDir, `qemu-probe-${key}.json`);
}

async function readDiskCache(file: string, identity: Identity): Promise<QemuAbilities | undefined> {
  try {
    const entry = JSON.parse(await readFile(file, "utf8"));
    if (
      entry?.schema === CACHE_SCHEMA &&
      sameIdentity(entry.identity, identity) &&
      isAbilities(entry.abilities)
    ) {
      return entry.abilities;
    }
  } catch {
    // Missing or unreadable: probe again and rewrite it.
  }
  return undefined;
}

async function writeDiskCache(file: string, identity: Identity, abilities: QemuAbilities): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
  try {
    await writeFile(tmp, `${JSON.stringify({ schema: CACHE_SCHEMA, identity, abilities }, null, 2)}\n`);
    await rename(tmp, file);
  } catch (error) {
    await rm(tmp, { force: true });
    throw error;
  }
}

/**
 * What a QEMU binary can do, asked of the binary itself. Cached per resolved path, mtime and size, so an upgraded
 * QEMU is probed again; failures are not cached.
 */
export async function probeQemu(binary: string, opts?: ProbeOptions): Promise<QemuAbilities> {
  let identity: Identity;
  try {
    const resolved = await realpath(binary);
    const info = await stat(resolved);
    identity = { path: resolved, mtimeMs: info.mtimeMs, size: info.size };
  } catch (error) {
    throw new HostDetectError(
      "QEMU_NOT_FOUND",
      `${binary} does not exist (${(error as NodeJS.ErrnoException).code}): use findQemu() to locate QEMU.`,
      { path: binary, cause: error },
    );
  }
  const cached = memoryCache.get(identity.path);
  if (cached !== undefined && sameIdentity(cached.identity, identity)) return cached.result;

  const result = (async () => {
    const file = opts?.cacheDir === undefined ? undefined : diskCachePath(opts.cacheDir, identity);
    const fromDisk = file === undefined ? undefined : await readDiskCache(file, identity);
    if (fromDisk !== undefined) return fromDisk;
    const abilities = await probeUncached(binary, opts?.timeoutMs ?? DEFAULT_PROBE_TIMEOUT_MS);
    if (file !== undefined) {
      // The disk cache only saves a later process ~0.3 s; failing to write it must not fail the probe.
      await writeDiskCache(file, identity, abilities).catch(() => undefined);
    }
    return abilities;
  })();
  memoryCache.set(identity.path, { identity, result });
  result.catch(() => {
    if (memoryCache.get(identity.path)?.result === result) memoryCache.delete(identity.path);
  });
  return result;
}

/** Forgets in-memory probe results (the disk cache is keyed by mtime and needs no clearing). */
export function clearProbeCache(): void {
  memoryCache.clear();
}
