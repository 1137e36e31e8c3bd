import { randomBytes } from "node:crypto";
import { rename, stat, unlink } from "node:fs/promises";
import path from "node:path";
import type { QmpClient } from "./client.js";
import { QmpError } from "./errors.js";
import {
  type Abilities,
  abilities,
  assertSupported,
  migrationUri,
  readsStateByPath,
  type SaveMethod,
} from "./save-method.js";
import type { QmpEvent } from "./types.js";

export interface SaveProgress {
  transferred: number;
  total: number;
}

export interface SaveOptions {
  method: SaveMethod;
  path: string;
  onProgress?: (p: SaveProgress) => void;
  /** Whole save deadline; on expiry the migration is cancelled. Default 10 minutes. */
  timeoutMs?: number;
}

export interface SaveResult {
  method: SaveMethod;
  path: string;
  /** Size of the state file. */
  bytes: number;
  durationMs: number;
}

export interface RestoreOptions {
  method: SaveMethod;
  path: string;
  /**
   * `path`, already open for reading in QEMU as this file descriptor (handed over when QEMU was started, e.g. as
   * a spawn stdio entry). QEMU then reads it directly instead of starting a shell and `cat`: tens of
   * milliseconds less per restore. Not for `file` and `mapped-ram`, which read the file by path. (Saving has no
   * such option: QEMU 7.2's outgoing `fd:` takes only descriptors handed over the monitor with `getfd`, which
   * needs SCM_RIGHTS, and Node's sockets cannot send descriptors.)
   */
  fd?: number;
  /**
   * For `x-ignore-shared`: the RAM file belongs to this VM alone and moves on with it (it was saved from this same
   * file with share=on, and the saved state is not resumed twice), so mapping it with share=on again is intended.
   * Without it, a share=on RAM file is refused: a template shared by many resumes must be mapped share=off.
   */
  ownsRamFile?: boolean;
  /** Deadline for loading the state. Default 10 minutes. */
  timeoutMs?: number;
}

const DEFAULT_MIGRATION_TIMEOUT_MS = 10 * 60_000;
/** 100 GiB/s: effectively unthrottled for a local file, and well inside QEMU's accepted range. */
const UNTHROTTLED_BYTES_PER_SECOND = 100 * 1024 ** 3;
/** `query-migrate` costs well under a millisecond; MIGRATION events usually wake the loop before this. */
const POLL_INTERVAL_MS = 25;
/** Capabilities this module turns on or off; each one is only sent when the running QEMU knows it. */
const MANAGED_CAPABILITIES = ["events", "x-ignore-shared", "mapped-ram", "multifd"] as const;

/** The part of `query-migrate`'s answer read here; QEMU sends more. */
interface MigrationInfo {
  status?: string;
  "error-desc"?: string;
  ram?: { transferred: number; total: number };
}

function incomingUri(opts: RestoreOptions, source: string): string {
  if (opts.fd === undefined) return migrationUri(opts.method, source, "in");
  if (readsStateByPath(opts.method)) {
    throw new QmpError(
      "UNSUPPORTED",
      `the ${opts.method} method reads the state by path; restore it without fd`,
    );
  }
  if (!Number.isInteger(opts.fd) || opts.fd < 3) {
    throw new QmpError("UNSUPPORTED", `fd must be a descriptor number above 2, got ${opts.fd}`);
  }
  return `fd:${opts.fd}`;
}

/** Both sides of a migration must agree on these, or the destination QEMU exits while loading. */
async function setCapabilitiesFor(q: QmpClient, method: SaveMethod, a: Abilities): Promise<void> {
  const wanted: Record<string, boolean> = {
    events: true,
    "x-ignore-shared": method === "x-ignore-shared",
    "mapped-ram": method === "mapped-ram",
    // multifd cannot work over exec: and is not needed for a paused save to one local file.
    multifd: false,
  };
  const caps: Record<string, boolean> = {};
  for (const name of MANAGED_CAPABILITIES) if (a.capabilities.has(name)) caps[name] = wanted[name] ?? false;
  await q.execute("migrate-set-capabilities", {
    capabilities: Object.entries(caps).map(([capability, state]) => ({ capability, state })),
  });
}

function migrationFailure(info: MigrationInfo, what: string, hint: string): QmpError {
  const desc = info["error-desc"];
  return new QmpError(
    "MIGRATION_FAILED",
    `${what} ended with status ${info.status}${desc ? `: ${desc}` : " (QEMU gave no reason; see its stderr)"}; ${hint}`,
    desc ? { desc } : {},
  );
}

/**
 * Polls `query-migrate` until the status is final (`completed`, `failed`, `cancelled`) and returns that info;
 * MIGRATION events wake the loop early. Throws TIMEOUT at the deadline.
 */
async function awaitMigration(
  q: QmpClient,
  deadline: number,
  events: AsyncIterableIterator<QmpEvent>,
  onInfo: (info: MigrationInfo) => void,
): Promise<MigrationInfo> {
  let nextEvent: Promise<unknown> | undefined;
  for (;;) {
    const info = await q.execute<MigrationInfo>("query-migrate");
    onInfo(info);
    if (info.status === "completed" || info.status === "failed" || info.status === "cancelled") return info;
    const left = deadline - Date.now();
    if (left <= 0)
      throw new QmpError(
        "TIMEOUT",
        `migration still ${info.status ?? "starting"} at its deadline; raise timeoutMs for a large guest or slow disk`,
      );
    nextEvent ??= events.next();
    let timer: NodeJS.Timeout | undefined;
    const woke = await Promise.race([
      nextEvent.then(() => "event" as const),
      new Promise<"timer">((resolve) => {
        timer = setTimeout(() => resolve("timer"), Math.min(POLL_INTERVAL_MS, left));
      }),
    ]);
    clearTimeout(timer);
    if (woke === "event") nextEvent = undefined;
  }
}

/**
 * Saves the VM's state to `path` (written to a temporary name, renamed on success). A running VM is stopped first
 * and left paused (`postmigrate`) afterwards. With `x-ignore-shared`, do not `cont` it afterwards: a running guest
 * with `share=on` RAM keeps writing into the memory file the saved state depends on; quit it instead.
 */
export async function saveVmState(q: QmpClient, opts: SaveOptions): Promise<SaveResult> {
  const deadline = Date.now() + (opts.timeoutMs ?? DEFAULT_MIGRATION_TIMEOUT_MS);
  const a = await abilities(q);
  assertSupported(opts.method, a);
  if (opts.method === "x-ignore-shared" && !a.sharedRam) {
    throw new QmpError(
      "UNSUPPORTED",
      "x-ignore-shared needs guest RAM in a memory-backend-file with share=on (memoryBackendArgs({ share: true })), " +
        "and this VM has none: the state would not be restorable from a RAM file; use exec or chooseSaveMethod()",
    );
  }
  const target = path.resolve(opts.path);
  const temp = `${target}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  const uri = migrationUri(opts.method, temp, "out");

  const status = await q.queryStatus();
  if (status.running) await q.stop();
  // QEMU's default of 128 MiB/s throttles even a paused save to a local file.
  await q.execute("migrate-set-parameters", { "max-bandwidth": UNTHROTTLED_BYTES_PER_SECOND });
  await setCapabilitiesFor(q, opts.method, a);

  const events = q.events("MIGRATION");
  const started = performance.now();
  try {
    await q.execute("migrate", { uri });
    let info: MigrationInfo;
    try {
      info = await awaitMigration(q, deadline, events, (i) => {
        if (i.ram) opts.onProgress?.({ transferred: i.ram.transferred, total: i.ram.total });
      });
    } catch (error) {
      if (error instanceof QmpError && error.code === "TIMEOUT")
        await q.execute("migrate_cancel").catch(() => undefined);
      throw error;
    }
    const durationMs = performance.now() - started;
    if (info.status !== "completed") {
      throw migrationFailure(
        info,
        `saving VM state to ${target}`,
        `check that ${path.dirname(target)} exists, is writable and has free space`,
      );
    }
    await rename(temp, target);
    const { size } = await stat(target);
    return { method: opts.method, path: target, bytes: size, durationMs };
  } catch (error) {
    await unlink(temp).catch(() => undefined);
    throw error;
  } finally {
    await events.return?.();
  }
}

/**
 * Loads state saved by `saveVmState` into a QEMU started with `-incoming defer` (and the same machine, devices,
 * memory backend id and size; for `x-ignore-shared`, the same `mem-path` with `share=off`). Resolves once the VM
 * is paused with the state loaded; send `cont` to run it.
 */
export async function restoreVmState(q: QmpClient, opts: RestoreOptions): Promise<void> {
  const deadline = Date.now() + (opts.timeoutMs ?? DEFAULT_MIGRATION_TIMEOUT_MS);
  const a = await abilities(q);
  assertSupported(opts.method, a);
  if (opts.method === "x-ignore-shared" && a.sharedRam && !opts.ownsRamFile) {
    throw new QmpError(
      "UNSUPPORTED",
      "restoring x-ignore-shared state needs the RAM file mapped with share=off (memoryBackendArgs({ share: false })); " +
        "with share=on the resumed guest would write into the saved RAM file (pass ownsRamFile when that is intended)",
    );
  }
  const source = path.resolve(opts.path);
  try {
    await stat(source);
  } catch (error) {
    throw new QmpError("MIGRATION_FAILED", `no saved VM state at ${source}; save one first or cold-boot`, {
      cause: error,
    });
  }
  const status = await q.queryStatus();
  if (status.status !== "inmigrate") {
    throw new QmpError(
      "MIGRATION_FAILED",
      `cannot restore into a VM in state ${status.status}: start QEMU with -incoming defer (and -S) to restore`,
    );
  }
  await setCapabilitiesFor(q, opts.method, a);
  const events = q.events("MIGRATION");
  try {
    await q.execute("migrate-incoming", { uri: incomingUri(opts, source) });
    const info = await awaitMigration(q, deadline, events, () => undefined);
    if (info.status !== "completed") {
      throw migrationFailure(
        info,
        `loading VM state from ${source}`,
        "the state must come from the same QEMU version, machine, devices and memory backend",
      );
    }
    // The run state is settled before QEMU reports `completed`; a guest saved while running would be started
    // here unless QEMU was given -S, so pause it to keep the contract.
    const after = await q.queryStatus();
    if (after.running) await q.stop();
  } catch (error) {
    if (error instanceof QmpError && error.code === "CLOSED") {
      throw new QmpError(
        "MIGRATION_FAILED",
        `QEMU exited while loading VM state from ${source} (its stderr says why): the state must come from the same ` +
          `QEMU version, machine, devices, memory backend and migration capabilities (method ${opts.method})`,
        { cause: error },
      );
    }
    throw error;
  } finally {
    await events.return?.();
  }
}
