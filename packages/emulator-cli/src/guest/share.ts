import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, rmSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import type { QgaClient } from "@stack/qga";
import type { QmpClient } from "@stack/qmp";
import * as v from "valibot";
import { GUEST, SHARE } from "../contract/contract.js";
import { EmulatorError } from "../core/errors.js";
import { writeFileAtomic } from "../core/fs-atomic.js";
import type { InstancePaths } from "../core/paths.js";
import { readStateFile, type Warn } from "../core/state-file.js";
import { SHARE_DEVICE } from "../vm/qemu-args.js";

/**
 * The config-file share (docs/guest-contract.md, section 6): a staging tree per instance that mirrors the absolute
 * paths of the config files this instance serves, with a copy of each file and of the package.json files the backend
 * reads beside it (in the file's folder and its parents), and nothing else. The guest sees it as 9p tag `hostfs` at
 * `/host`. share-sync.ts keeps each config file and its copy equal while the VM runs.
 */

export interface ShareRecord {
  version: 1;
  /** Canonical absolute paths (symlinks resolved) of the config files shared with the guest. */
  files: string[];
}

const shareRecordSchema: v.GenericSchema<unknown, ShareRecord> = v.object({
  version: v.literal(1),
  files: v.array(v.pipe(v.string(), v.startsWith("/"))),
});

/** The config files shared with the guest; none when there is no record (or, with `warn`, an unreadable one). */
export function readShareRecord(paths: InstancePaths, warn?: Warn): ShareRecord {
  return readStateFile(paths.shareRecord, shareRecordSchema, { warn }) ?? { version: 1, files: [] };
}

/** Adds a config file to the share; whether it was new. */
export function addSharedFile(paths: InstancePaths, file: string): boolean {
  const record = readShareRecord(paths);
  if (record.files.includes(file)) return false;
  record.files.push(file);
  writeFileAtomic(paths.shareRecord, `${JSON.stringify(record, null, 2)}\n`, 0o600);
  return true;
}

/** Where a host path appears in the staging tree. */
export function stagedPath(paths: InstancePaths, hostPath: string): string {
  return join(paths.shareDir, hostPath);
}

/** The package.json files of a config file's folder and its parents: the backend picks the import line from them. */
export function packageJsonFiles(file: string): string[] {
  const found: string[] = [];
  for (let dir = dirname(file); ; dir = dirname(dir)) {
    const candidate = join(dir, "package.json");
    if (existsSync(candidate)) found.push(candidate);
    if (dirname(dir) === dir) return found;
  }
}

export function contentHash(data: Buffer | undefined): string | undefined {
  return data === undefined ? undefined : createHash("sha256").update(data).digest("hex");
}

export function readIfFile(path: string): Buffer | undefined {
  try {
    return statSync(path).isFile() ? readFileSync(path) : undefined;
  } catch {
    return undefined;
  }
}

/** Copies `from` to `to` (atomically, mode kept) unless their contents are equal already; whether it copied. */
export function copyIfChanged(from: string, to: string): boolean {
  const data = readIfFile(from);
  if (data === undefined) {
    rmSync(to, { force: true });
    return false;
  }
  const current = readIfFile(to);
  if (current?.equals(data)) return false;
  mkdirSync(dirname(to), { recursive: true, mode: 0o755 });
  writeFileAtomic(to, data, statSync(from).mode & 0o777);
  return true;
}

/**
 * Brings the staging tree in line with the record, host to staging: every config file and package.json copied in,
 * anything else removed. Returns the files that are missing on the host (they stay in the record).
 */
export function stageShare(paths: InstancePaths, record: ShareRecord): string[] {
  const wanted = new Set<string>();
  const missing: string[] = [];
  for (const file of record.files) {
    if (!existsSync(file)) {
      missing.push(file);
      continue;
    }
    for (const hostPath of [file, ...packageJsonFiles(file)]) {
      wanted.add(stagedPath(paths, hostPath));
      copyIfChanged(hostPath, stagedPath(paths, hostPath));
    }
  }
  pruneStaging(paths.shareDir, wanted);
  return missing;
}

/** Removes staged files that are not wanted any more, and the folders that leaves empty. */
function pruneStaging(dir: string, wanted: ReadonlySet<string>): void {
  if (!existsSync(dir)) return;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) {
      pruneStaging(path, wanted);
      if (readdirSync(path).length === 0) rmdirSync(path);
    } else if (!wanted.has(path)) {
      rmSync(path, { force: true });
    }
  }
}

const MOUNTED = `grep -qs '^${SHARE.tag} ${SHARE.guestMount} 9p ' /proc/mounts`;
/** Waits (up to 10 s) for the guest to bind the hot-plugged device, then mounts it unless it is mounted already. */
const MOUNT_SCRIPT = `i=0; until grep -qsx ${SHARE.tag} /sys/bus/virtio/drivers/9pnet_virtio/*/mount_tag; do i=$((i+1)); [ $i -lt 200 ] || { echo "the guest did not find the 9p device ${SHARE.tag}" >&2; exit 1; }; sleep 0.05; done; ${MOUNTED} || exec ${GUEST.mountHostFs} --post-resume`;
/** Unmounts every 9p mount at /host (the real image's mount-host-fs may have stacked one at boot), retrying a busy one. */
const UNMOUNT_SCRIPT = `i=0; while ${MOUNTED}; do umount ${SHARE.guestMount} 2>/dev/null && continue; i=$((i+1)); [ $i -lt 50 ] || { echo "${SHARE.guestMount} is busy in the guest" >&2; exit 1; }; sleep 0.1; done`;

async function guestShell(qga: QgaClient, script: string, what: string): Promise<void> {
  const result = await qga.exec(
    { path: GUEST.shell, args: ["-c", script], captureOutput: true },
    { timeoutMs: 30_000 },
  );
  if (result.exitCode !== 0) {
    const detail =
      result.stderr.toString().trim() || result.stdout.toString().trim() || `signal ${result.signal}`;
    throw new EmulatorError("SHARE_FAILED", `${what} failed in the guest: ${detail}`);
  }
}

/**
 * Plugs the share into a running guest: the 9p device into its reserved root port (unless it is there already, as
 * after a resume of a state saved with it), then `mount-host-fs --post-resume`, the guest's own entry point.
 */
export async function plugShare(qmp: QmpClient, qga: QgaClient, devicePresent: boolean): Promise<void> {
  if (!devicePresent) {
    const { driver, ...props } = SHARE_DEVICE;
    await qmp.deviceAdd(driver, props);
  }
  await guestShell(qga, MOUNT_SCRIPT, "mounting the config-file share at /host");
}

/** QEMU cannot save a guest with a 9p export mounted: the share is unmounted first (the device stays). */
export async function unmountShare(qga: QgaClient): Promise<void> {
  await guestShell(qga, UNMOUNT_SCRIPT, "unmounting the config-file share");
}
