import { spawn } from "node:child_process";
import { type FSWatcher, openSync, rmSync, statSync, watch } from "node:fs";
import { dirname } from "node:path";
import { writeFileAtomic } from "../core/fs-atomic.js";
import type { InstancePaths } from "../core/paths.js";
import {
  identify,
  isSameProcess,
  type ProcessIdentity,
  processIdentitySchema,
} from "../core/process-identity.js";
import { readStateFile } from "../core/state-file.js";
import {
  contentHash,
  copyIfChanged,
  packageJsonFiles,
  readIfFile,
  readShareRecord,
  stagedPath,
  stageShare,
} from "../guest/share.js";

/**
 * share-sync: the host process that keeps each shared config file and its copy in the staging tree equal, both
 * ways, while the instance's VM runs (like Lima's host agent, one per instance). An editor's save (often a rename
 * over the file) is copied in; the backend's write in the guest (in place, through 9p) is copied out to the user's
 * file, once it has stopped changing. When both changed since the last sync, the host's edit wins. package.json
 * files only go host to guest. It exits when the VM's QEMU does, or on SIGTERM after a last pass.
 */

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** A guest write in progress (truncate, then write) must not be copied out half done. */
const SETTLE_MS = 50;
/** fs.watch can miss an event (a folder replaced, an overflow): a full pass this often regardless. */
const SAFETY_PASS_MS = 2000;

export class ShareSync {
  /** Per config file, the hash of the content both sides last agreed on. */
  readonly #agreed = new Map<string, string | undefined>();

  constructor(
    readonly paths: InstancePaths,
    readonly log: (line: string) => void = () => undefined,
  ) {}

  /** One pass over every shared file. */
  async pass(): Promise<void> {
    const { files } = readShareRecord(this.paths);
    for (const file of files) {
      await this.#syncConfig(file);
      for (const pkg of packageJsonFiles(file)) copyIfChanged(pkg, stagedPath(this.paths, pkg));
    }
  }

  async #syncConfig(file: string): Promise<void> {
    const staged = stagedPath(this.paths, file);
    const host = readIfFile(file);
    const copy = readIfFile(staged);
    const hostHash = contentHash(host);
    const copyHash = contentHash(copy);
    if (hostHash === copyHash) {
      this.#agreed.set(file, hostHash);
      return;
    }
    const agreed = this.#agreed.get(file);
    if (!this.#agreed.has(file) || hostHash !== agreed || copy === undefined) {
      // The host changed (or this is the first look, or the copy is gone): the host's version goes in.
      copyIfChanged(file, staged);
      this.#agreed.set(file, hostHash);
      this.log(
        host === undefined ? `${file} is gone on the host: removed from the guest` : `${file} -> guest`,
      );
      return;
    }
    // Only the guest's copy changed: copied out once it stops changing.
    await sleep(SETTLE_MS);
    const settled = readIfFile(staged);
    if (settled === undefined || !settled.equals(copy)) return;
    const mode = host === undefined ? 0o644 : statSync(file).mode & 0o777;
    writeFileAtomic(file, settled, mode);
    this.#agreed.set(file, copyHash);
    this.log(`guest -> ${file}`);
  }

  /** The folders whose changes matter: each config file's on both sides, and those holding a package.json. */
  watchedFolders(): string[] {
    const folders = new Set<string>();
    for (const file of readShareRecord(this.paths).files) {
      folders.add(dirname(file));
      folders.add(dirname(stagedPath(this.paths, file)));
      for (const pkg of packageJsonFiles(file)) folders.add(dirname(pkg));
    }
    return [...folders];
  }
}

/** Runs share-sync until QEMU is gone or SIGTERM arrives. */
export async function runShareSync(paths: InstancePaths, qemu: ProcessIdentity): Promise<void> {
  const log = (line: string) => process.stdout.write(`${new Date().toISOString()} ${line}\n`);
  const sync = new ShareSync(paths, log);
  let watchers: FSWatcher[] = [];
  let scheduled: NodeJS.Timeout | undefined;
  let running = Promise.resolve();
  const runPass = () => {
    running = running
      .then(() => sync.pass())
      .catch((error: Error) => {
        log(`sync failed: ${error.message}`);
      });
    return running;
  };
  const schedule = () => {
    if (scheduled) return;
    scheduled = setTimeout(() => {
      scheduled = undefined;
      void runPass();
    }, 20);
  };
  const rewatch = () => {
    for (const watcher of watchers) watcher.close();
    watchers = [];
    for (const folder of sync.watchedFolders()) {
      try {
        watchers.push(watch(folder, schedule));
      } catch {
        // A folder that is gone is caught by the safety pass.
      }
    }
  };
  let stopping = false;
  const stop = () => {
    stopping = true;
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  // SIGHUP: the record changed (a config file was added).
  process.on("SIGHUP", () => {
    stageShare(paths, readShareRecord(paths));
    rewatch();
    schedule();
  });
  log(`watching the config files of ${paths.dir} for QEMU pid ${qemu.pid}`);
  rewatch();
  await runPass();
  let sinceSafetyPass = 0;
  while (!stopping && isSameProcess(qemu)) {
    await sleep(250);
    sinceSafetyPass += 250;
    if (sinceSafetyPass >= SAFETY_PASS_MS) {
      sinceSafetyPass = 0;
      await runPass();
    }
  }
  for (const watcher of watchers) watcher.close();
  if (scheduled) clearTimeout(scheduled);
  await runPass();
  log(stopping ? "stopped" : "QEMU is gone: stopped");
}

function readIdentity(file: string): ProcessIdentity | undefined {
  return readStateFile(file, processIdentitySchema);
}

/**
 * Starts the instance's share-sync (the CLI's own script, detached, its output in share.log), or tells a running one
 * that the record changed.
 */
export function startShareSync(
  paths: InstancePaths,
  instance: string,
  qemu: ProcessIdentity,
  env: NodeJS.ProcessEnv,
): void {
  const running = readIdentity(paths.shareSyncPid);
  if (running && isSameProcess(running)) {
    process.kill(running.pid, "SIGHUP");
    return;
  }
  const log = openSync(paths.shareLog, "a", 0o600);
  const child = spawn(
    process.execPath,
    [
      process.argv[1] as string,
      "--instance",
      instance,
      "share-sync",
      "--qemu-pid",
      String(qemu.pid),
      "--qemu-start",
      qemu.startTime,
    ],
    { detached: true, stdio: ["ignore", log, log], env },
  );
  child.unref();
  const identity = child.pid === undefined ? undefined : identify(child.pid);
  if (identity) writeFileAtomic(paths.shareSyncPid, JSON.stringify(identity), 0o600);
}

/** Ends share-sync after its last pass, so a write the guest made just before is not lost. */
export async function stopShareSync(paths: InstancePaths): Promise<void> {
  const running = readIdentity(paths.shareSyncPid);
  if (running && isSameProcess(running)) {
    process.kill(running.pid, "SIGTERM");
    for (let waited = 0; waited < 3000 && isSameProcess(running); waited += 20) await sleep(20);
    if (isSameProcess(running)) process.kill(running.pid, "SIGKILL");
  }
  rmSync(paths.shareSyncPid, { force: true });
}
