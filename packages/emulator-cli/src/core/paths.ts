import { createHash } from "node:crypto";
import { mkdirSync, statSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { EmulatorError } from "./errors.js";

/** Longest unix socket path we allow: sun_path is 108 bytes on Linux, 104 on macOS, including the NUL. */
const MAX_SOCKET_PATH = 100;
const INSTANCE_NAME = /^[a-z0-9][a-z0-9-]{0,31}$/;

export interface HomeLayout {
  home: string;
  images: string;
  snapshots: string;
  instances: string;
  hostFacts: string;
}

/** The home's layout: `home` (STACK_EMULATOR_HOME), else ~/.stack/emulator. */
export function resolveHome(home?: string): HomeLayout {
  home = resolve(home || join(homedir(), ".stack", "emulator"));
  return {
    home,
    images: join(home, "images"),
    snapshots: join(home, "snapshots"),
    instances: join(home, "instances"),
    hostFacts: join(home, "host.json"),
  };
}

export function isValidInstanceName(name: string): boolean {
  return INSTANCE_NAME.test(name);
}

export function validateInstanceName(name: string): string {
  if (!isValidInstanceName(name)) {
    throw new EmulatorError(
      "INVALID_NAME",
      `invalid instance name ${JSON.stringify(name)}`,
      "use 1-32 characters: lowercase letters, digits and dashes, starting with a letter or digit",
    );
  }
  return name;
}

export interface InstancePaths {
  dir: string;
  state: string;
  lock: string;
  disk: string;
  /** Which image the disk overlay was made for: a disk made for another image is not booted. */
  diskInfo: string;
  configIso: string;
  serialLog: string;
  qemuLog: string;
  cliLog: string;
  pidFile: string;
  keys: string;
  /** The staging tree shared with the guest as `/host`: config files at their absolute paths, nothing else. */
  shareDir: string;
  /** The config files this instance shares, and the pid of the process that keeps their copies in sync. */
  shareRecord: string;
  shareSyncPid: string;
  shareLog: string;
  /** The internal project's publishable key in service, alone (the original CLI's `internal-pck`). */
  internalPck: string;
  /** Host ports chosen with `--ports auto`, reused by later starts. */
  ports: string;
  /** This instance's writable copy of the UEFI variable store. */
  firmwareVars: string;
  /**
   * The instance's own guest RAM (share=on) where QEMU allows it: what a `stop` leaves for the next start, so that
   * saving and resuming write only device state, whatever the RAM size.
   */
  ram: string;
  /** What `stop` saved: the migration stream and its record, committed together as one directory. */
  suspend: string;
  suspendState: string;
  suspendRecord: string;
  /** A compressed snapshot's state, unpacked for one restore and removed right after. */
  restoreState: string;
  socketDir: string;
  qmpSocket: string;
  qgaSocket: string;
}

/**
 * Sockets live in the instance directory unless that path is too long for a unix socket; then in a
 * short per-instance directory under the temp dir, named by a hash of the instance directory.
 */
export function instancePaths(layout: HomeLayout, name: string): InstancePaths {
  const dir = join(layout.instances, validateInstanceName(name));
  let socketDir = join(dir, "sock");
  if (Buffer.byteLength(join(socketDir, "qmp.sock")) > MAX_SOCKET_PATH) {
    const digest = createHash("sha256").update(dir).digest("hex").slice(0, 16);
    socketDir = join(tmpdir(), `stack-emu-${digest}`);
  }
  return {
    dir,
    state: join(dir, "state.json"),
    lock: join(dir, "lock"),
    disk: join(dir, "disk.qcow2"),
    diskInfo: join(dir, "disk.json"),
    configIso: join(dir, "config.iso"),
    serialLog: join(dir, "serial.log"),
    qemuLog: join(dir, "qemu.log"),
    cliLog: join(dir, "emulator.log"),
    pidFile: join(dir, "qemu.pid"),
    keys: join(dir, "keys.env"),
    internalPck: join(dir, "internal-pck"),
    shareDir: join(dir, "share"),
    shareRecord: join(dir, "share.json"),
    shareSyncPid: join(dir, "share-sync.pid"),
    shareLog: join(dir, "share.log"),
    ports: join(dir, "ports.json"),
    firmwareVars: join(dir, "efivars.fd"),
    ram: join(dir, "ram"),
    suspend: join(dir, "suspend"),
    suspendState: join(dir, "suspend", "state"),
    suspendRecord: join(dir, "suspend", "suspend.json"),
    restoreState: join(dir, "restore.state"),
    socketDir,
    qmpSocket: join(socketDir, "qmp.sock"),
    qgaSocket: join(socketDir, "qga.sock"),
  };
}

/** Creates the socket directory private to this user, refusing one that someone else owns. */
export function ensureSocketDir(socketDir: string): void {
  mkdirSync(socketDir, { recursive: true, mode: 0o700 });
  const info = statSync(socketDir);
  if (typeof process.getuid === "function" && info.uid !== process.getuid()) {
    throw new EmulatorError(
      "SOCKET_DIR_NOT_OURS",
      `${socketDir} belongs to another user`,
      "set STACK_EMULATOR_HOME to a shorter path so sockets can live inside it",
    );
  }
}
