import { execFile } from "node:child_process";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
} from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { type ExecResult, QgaClient } from "@stack/qga";
import { type QmpClient, readsStateByPath, restoreVmState, type SaveMethod, saveVmState } from "@stack/qmp";
import { configHash, runtimeConfig, writeConfigDisk } from "./config-disk.js";
import { EmulatorError } from "./errors.js";
import { writeFileAtomic } from "./fs-atomic.js";
import { waitHealthy } from "./health.js";
import { type ResolvedMachine, rememberAcceleratorFailure, resolveMachine } from "./host.js";
import type { Image } from "./image.js";
import { describeSelector, type ImageSelector } from "./image-store.js";
import {
  type BootKind,
  clearState,
  type InstanceState,
  type Rotation,
  readState,
  writeState,
} from "./instance-state.js";
import { acquireLock } from "./lock.js";
import { type HomeLayout, type InstancePaths, instancePaths } from "./paths.js";
import { assertPortsFree, type ForwardedService, resolveServicePorts } from "./ports.js";
import { commandLine, identify, isSameProcess, type ProcessIdentity } from "./process-identity.js";
import type { RamSpec } from "./qemu-args.js";
import type { Reporter } from "./report.js";
import { formatEnv, generateSecrets, saveKeys } from "./secrets.js";
import {
  compressState,
  decompressState,
  type Fingerprint,
  fingerprintDifferences,
  fingerprintOf,
  pristineSnapshotDir,
  readSnapshot,
  type SnapshotFiles,
  snapshotFiles,
  writeSnapshotManifest,
} from "./snapshot.js";
import { commitStaging, createStaging, removeAbandonedStaging } from "./staging.js";
import {
  connectQmp,
  INHERITED_STATE_FD,
  launchQemu,
  removeRuntimeFiles,
  terminate,
  waitForExit,
} from "./vm.js";

const run = promisify(execFile);

export interface Context {
  layout: HomeLayout;
  name: string;
  paths: InstancePaths;
  env: NodeJS.ProcessEnv;
  report: Reporter;
}

export function createContext(
  layout: HomeLayout,
  name: string,
  env: NodeJS.ProcessEnv,
  report: Reporter,
): Context {
  return { layout, name, paths: instancePaths(layout, name), env, report };
}

const ms = (since: number) => Date.now() - since;
const seconds = (value: string | undefined, fallback: number) => {
  const parsed = value ? Number(value) : Number.NaN;
  return Number.isFinite(parsed) && parsed > 0 ? parsed * 1000 : fallback;
};

/** A VM this command started and still owns: on failure it is ended before anything else is tried. */
interface LiveVm {
  identity: ProcessIdentity;
  qmp: QmpClient;
  /** A guest agent connection opened before a restored guest ran. */
  agent?: Promise<QgaClient>;
}

interface Prepared {
  ctx: Context;
  image: Image;
  selector: ImageSelector;
  resolved: ResolvedMachine;
  services: ForwardedService[];
  config: Record<string, string>;
  configHash: string;
  /** How snapshots are captured on this host; undefined when snapshots are off or unsupported. */
  method?: SaveMethod;
  noSnapshot: boolean;
  snapshot: SnapshotFiles;
  noRotation: boolean;
}

/**
 * A `stop` saves the running state as a plain stream: a resumed guest's RAM is a private copy of the snapshot's
 * RAM file, so it must be written out whole (and `x-ignore-shared` only skips shared RAM).
 */
const SUSPEND_METHOD: SaveMethod = "exec";

/** The current fingerprint; computed when needed because the accelerator can change during a start. */
function fingerprint(p: Prepared, method: SaveMethod): Fingerprint {
  return fingerprintOf(p.resolved.machine, p.resolved.abilities.version.text, p.image, method);
}

/** The state a `stop` saved: resumed by the next `start` with the same RAM layout and method. */
interface SuspendRecord {
  fingerprint: Fingerprint;
  method: SaveMethod;
  ram: RamSpec;
  configHash: string;
  /** Whether the guest in the saved state holds this install's keys or still the public placeholders. */
  rotation: Rotation;
  savedAt: string;
}

const suspendStateFile = (paths: InstancePaths) => join(paths.suspend, "state");
const suspendRecordFile = (paths: InstancePaths) => join(paths.suspend, "suspend.json");

function readSuspend(paths: InstancePaths): SuspendRecord | undefined {
  try {
    if (!existsSync(suspendStateFile(paths))) return undefined;
    return JSON.parse(readFileSync(suspendRecordFile(paths), "utf8"));
  } catch {
    return undefined;
  }
}

/**
 * The snapshot method this QEMU supports best. Guest RAM in a file skipped by `x-ignore-shared` makes a capture
 * write only device state and a resume map RAM lazily. Without it, the whole guest goes into a migration stream
 * (`file:` where QEMU has it, else `exec:`), stored compressed. STACK_EMULATOR_SNAPSHOT_METHOD=stream forces that.
 */
function snapshotMethod(resolved: ResolvedMachine, env: NodeJS.ProcessEnv): SaveMethod {
  const { abilities } = resolved;
  const forced = env.STACK_EMULATOR_SNAPSHOT_METHOD;
  if (forced !== undefined && forced !== "stream" && forced !== "x-ignore-shared") {
    throw new EmulatorError(
      "INVALID_ARGUMENT",
      `STACK_EMULATOR_SNAPSHOT_METHOD=${forced} is not a snapshot method`,
      "use x-ignore-shared or stream, or unset it to let the host decide",
    );
  }
  const ignoreShared =
    abilities.memoryBackendFile && abilities.migrationCapabilities.includes("x-ignore-shared");
  if (ignoreShared && forced !== "stream") return "x-ignore-shared";
  return abilities.fileMigration ? "file" : "exec";
}

async function createOverlay(qemuImg: string, backing: string, overlay: string): Promise<void> {
  rmSync(overlay, { force: true });
  try {
    await run(qemuImg, ["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", backing, overlay]);
  } catch (error) {
    throw new EmulatorError(
      "DISK_FAILED",
      `qemu-img could not create ${overlay}: ${String((error as { stderr?: string }).stderr ?? (error as Error).message).trim()}`,
      "check free disk space and permissions under STACK_EMULATOR_HOME",
    );
  }
}

function recordInstanceDisk(p: Prepared): void {
  writeFileAtomic(
    p.ctx.paths.diskInfo,
    `${JSON.stringify({ imageDigest: p.image.manifest.digest }, null, 2)}\n`,
  );
}

/** An instance disk made for another image cannot boot with this one; it is kept aside, not deleted. */
function setAsideForeignDisk(p: Prepared): string | undefined {
  const { paths } = p.ctx;
  if (!existsSync(paths.disk)) return undefined;
  let digest: string | undefined;
  try {
    digest = JSON.parse(readFileSync(paths.diskInfo, "utf8")).imageDigest;
  } catch {
    digest = undefined;
  }
  if (digest === p.image.manifest.digest) return undefined;
  const aside = join(paths.dir, `disk-${Date.now()}.qcow2`);
  renameSync(paths.disk, aside);
  rmSync(paths.suspend, { recursive: true, force: true });
  return `the instance disk belongs to another image (${digest ?? "unknown"}); kept as ${aside}, starting fresh`;
}

async function abandonVm(vm: LiveVm): Promise<void> {
  await terminate(vm.identity, vm.qmp).catch(() => undefined);
  await vm.agent?.then((qga) => qga.close()).catch(() => undefined);
}

async function abandon(vm: LiveVm | undefined, paths: InstancePaths): Promise<void> {
  if (vm) await abandonVm(vm);
  removeRuntimeFiles(paths);
}

async function launch(
  p: Prepared,
  disk: string,
  ram: RamSpec,
  restore?: { method: SaveMethod; state: string },
): Promise<LiveVm> {
  const { report } = p.ctx;
  report.mark("launching QEMU");
  // Methods that stream the state can read it from a descriptor QEMU inherits; the others open it by path.
  const viaFd = restore && !readsStateByPath(restore.method);
  const identity = await launchQemu(
    {
      machine: p.resolved.machine,
      image: p.image,
      paths: p.ctx.paths,
      disk,
      services: p.services,
      ram,
      incoming: Boolean(restore),
    },
    viaFd ? restore.state : undefined,
  );
  report.mark("QEMU initialised");
  let vm: LiveVm | undefined;
  try {
    vm = { identity, qmp: await connectQmp(p.ctx.paths) };
    report.mark("QMP negotiated");
    if (restore) {
      // Connected before the guest runs: a guest saved with the agent's channel open (see holdingAgent) finds it
      // still open and answers at once. A channel that opens after the resume is only noticed on the agent's
      // next poll, which qemu-ga makes every 100 ms while no host is connected.
      vm.agent = connectAgent(p.ctx);
      await restoreVmState(vm.qmp, {
        method: restore.method,
        path: restore.state,
        ...(viaFd ? { fd: INHERITED_STATE_FD } : {}),
        timeoutMs: 60_000,
      });
      report.mark("state restored");
      await vm.qmp.cont();
      report.mark("guest running");
    }
    return vm;
  } catch (error) {
    if (vm) await abandonVm(vm);
    else await terminate(identity).catch(() => undefined);
    throw error;
  }
}

function connectAgent(ctx: Context, timeoutMs = seconds(ctx.env.STACK_EMULATOR_AGENT_TIMEOUT, 15_000)) {
  const agent = QgaClient.connect(ctx.paths.qgaSocket, { timeoutMs });
  // Awaited later, or never when the start fails first: its rejection must not count as unhandled.
  agent.catch(() => undefined);
  return agent;
}

/** The connection opened early for this VM (handed over once, so nothing else closes it), else a new one. */
function takeAgent(ctx: Context, vm: LiveVm, timeoutMs?: number): Promise<QgaClient> {
  const pending = vm.agent ?? connectAgent(ctx, timeoutMs);
  vm.agent = undefined;
  return pending;
}

/**
 * Runs `save` with the guest agent's channel open, so that the saved guest waits on an open channel (see launch).
 * An agent that does not answer soon does not hold the save up; the resume then pays the agent's poll delay.
 */
async function holdingAgent<T>(ctx: Context, vm: LiveVm, save: () => Promise<T>): Promise<T> {
  const qga = await takeAgent(ctx, vm, 2000).catch(() => undefined);
  try {
    return await save();
  } finally {
    await qga?.close().catch(() => undefined);
  }
}

async function withAgent<T>(ctx: Context, vm: LiveVm, fn: (qga: QgaClient) => Promise<T>): Promise<T> {
  // An early connection that failed is not retried: it already waited the whole agent timeout, or QEMU is gone.
  const qga = await takeAgent(ctx, vm);
  ctx.report.mark("guest agent in sync");

  try {
    return await fn(qga);
  } finally {
    await qga.close().catch(() => undefined);
  }
}

const GUEST_COMMAND_TIMEOUT_MS = 30_000;

async function guestExec(qga: QgaClient, path: string, what: string): Promise<void> {
  checkGuestExit(
    await qga.exec({ path, captureOutput: true }, { timeoutMs: GUEST_COMMAND_TIMEOUT_MS }),
    what,
  );
}

function checkGuestExit(result: ExecResult, what: string): void {
  if (result.exitCode !== 0) {
    const detail =
      result.stderr.toString().trim() || result.stdout.toString().trim() || `signal ${result.signal}`;
    throw new EmulatorError(
      "GUEST_COMMAND_FAILED",
      `${what} failed in the guest (exit ${result.exitCode ?? "-"}): ${detail}`,
    );
  }
}

/**
 * Fresh keys for this install: generated here, handed to the guest on stdin through the agent, and saved on the
 * host only once the guest has accepted them.
 */
async function rotateSecrets(
  p: Prepared,
  qga: QgaClient,
  whileStarting?: () => Promise<void>,
): Promise<Rotation> {
  if (p.noRotation) {
    p.ctx.report.warn(
      "EMULATOR_NO_ROTATION=1: the emulator keeps the PUBLIC placeholder keys baked into the image. Anyone can use them. Never expose these ports.",
    );
    await whileStarting?.();
    // Keys from an earlier start no longer describe this guest: it serves the placeholders.
    rmSync(p.ctx.paths.keys, { force: true });
    return "skipped";
  }
  p.ctx.report.step("rotating secrets through the guest agent");
  const secrets = generateSecrets(p.image.manifest.secrets);
  const pid = await qga.spawn(
    { path: p.image.manifest.guest.rotateSecrets, captureOutput: true, stdin: formatEnv(secrets) },
    { timeoutMs: GUEST_COMMAND_TIMEOUT_MS },
  );
  // The guest starts the rotation program meanwhile, so the agent's hwclock run (set-time) no longer delays it.
  // Not a guarantee of order: the clock is set a few milliseconds into the program's start, while a restart of the
  // app comes after validating and storing the secrets, far later.
  await whileStarting?.();
  checkGuestExit(await qga.waitForExit(pid, { timeoutMs: GUEST_COMMAND_TIMEOUT_MS }), "secret rotation");
  saveKeys(p.ctx.paths.keys, secrets);
  p.ctx.report.mark("secrets rotated");
  return "rotated";
}

async function waitServices(p: Prepared, vm: LiveVm, timeoutMs: number, what: string): Promise<void> {
  const result = await waitHealthy(p.services, { timeoutMs, stillRunning: () => isSameProcess(vm.identity) });
  p.ctx.report.mark(`${what}: services answered`);
  if (!result.healthy) {
    const failing = result.results
      .filter((r) => !r.healthy)
      .map((r) => `${r.name} ${r.url}: ${r.status ?? r.error}`)
      .join("; ");
    throw new EmulatorError(
      "UNHEALTHY",
      `${what}: services not healthy within ${Math.round(timeoutMs / 1000)} s (${failing})`,
      `see \`stack-emulator logs\` (${p.ctx.paths.serialLog})`,
    );
  }
}

async function setGuestClock(p: Prepared, qga: QgaClient): Promise<void> {
  await qga.setTime(new Date());
  p.ctx.report.mark("guest clock set");
}

/**
 * A restored guest's clock, runtime config and (for a snapshot) secrets, then its health. When nothing in that
 * restarts the app (no rotation, same config) the health check runs alongside the agent's work, not after it.
 */
async function settleResumedGuest(
  p: Prepared,
  vm: LiveVm,
  savedConfigHash: string,
  options: { rotate: boolean; what: string },
): Promise<Rotation | undefined> {
  const { applyConfig } = p.image.manifest.guest;
  const configChanged = savedConfigHash !== p.configHash && Boolean(applyConfig);
  const agentWork = withAgent(p.ctx, vm, async (qga) => {
    // The clock is set before anything restarts the app (rotation, config): not with the time of the save.
    if (options.rotate && !configChanged) return rotateSecrets(p, qga, () => setGuestClock(p, qga));
    await setGuestClock(p, qga);
    if (configChanged && applyConfig) {
      p.ctx.report.step("applying the changed runtime config in the guest");
      await guestExec(qga, applyConfig, "applying the runtime config");
    }
    return options.rotate ? rotateSecrets(p, qga) : undefined;
  });
  const restartsApp = (options.rotate && !p.noRotation) || configChanged;
  if (restartsApp) {
    const rotation = await agentWork;
    await waitServices(p, vm, 30_000, options.what);
    return rotation;
  }
  const [rotation] = await Promise.all([agentWork, waitServices(p, vm, 30_000, options.what)]);
  return rotation;
}

interface Outcome {
  vm: LiveVm;
  boot: BootKind;
  ram: RamSpec;
  rotation: Rotation;
  /** How the state it resumed was saved. */
  method?: SaveMethod;
}

async function coldBoot(p: Prepared, disk: string, ram: RamSpec): Promise<LiveVm> {
  const { report, env, paths } = p.ctx;
  const timeoutMs = seconds(env.STACK_EMULATOR_BOOT_TIMEOUT, 300_000);
  const { accel } = p.resolved.machine;
  const hardware = accel !== "tcg";
  report.step(`cold booting (${accel})`);
  const serialBefore = fileSize(paths.serialLog);
  let vm: LiveVm;
  try {
    vm = await launch(p, disk, ram);
  } catch (error) {
    if (hardware && error instanceof EmulatorError && error.code === "QEMU_EXITED") {
      return bootWithTcgInstead(p, disk, ram, `QEMU failed to start under ${accel} (${error.message})`);
    }
    throw error;
  }
  // The agent comes up with the services: its channel is open by the time they answer.
  vm.agent = connectAgent(p.ctx, timeoutMs);
  try {
    if (hardware) {
      // The last line of defence: a hardware accelerator that passed its proof can still stall a real kernel.
      const progressMs = seconds(env.STACK_EMULATOR_KVM_PROGRESS_TIMEOUT, 20_000);
      const progress = await waitForSerialOutput(paths.serialLog, serialBefore, progressMs, vm.identity);
      if (progress !== "printed") {
        await abandon(vm, paths);
        return bootWithTcgInstead(
          p,
          disk,
          ram,
          progress === "exited"
            ? `QEMU under ${accel} exited before the guest printed anything`
            : `a ${accel} boot printed nothing in ${progressMs / 1000} s`,
        );
      }
    }
    report.step("waiting for the services");
    await waitServices(p, vm, timeoutMs, "cold boot");
    return vm;
  } catch (error) {
    await abandon(vm, paths);
    throw error;
  }
}

/**
 * A hardware accelerator failed a real boot: tcg from now on, said and remembered for this host. Not when the user
 * asked for that accelerator by name: then the failure is theirs to see.
 */
async function bootWithTcgInstead(p: Prepared, disk: string, ram: RamSpec, why: string): Promise<LiveVm> {
  const { accel } = p.resolved.machine;
  if (p.resolved.accelOverridden) {
    throw new EmulatorError(
      "ACCEL_UNUSABLE",
      `EMULATOR_ACCEL=${accel}: ${why}`,
      "unset EMULATOR_ACCEL to let the emulator choose an accelerator that works (tcg at worst)",
    );
  }
  rememberAcceleratorFailure(p.ctx.layout, p.resolved, why);
  p.ctx.report.warn(`${why}: this host's ${accel} cannot boot the guest; using tcg from now on`);
  p.resolved.machine.accel = "tcg";
  // The next boot must not start from what the failed one left in the RAM file.
  if (ram.kind === "file") rmSync(ram.path, { force: true });
  return coldBoot(p, disk, ram);
}

function fileSize(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

/** The serial log is appended to across boots: progress is growth past `before`. */
async function waitForSerialOutput(
  log: string,
  before: number,
  timeoutMs: number,
  identity: ProcessIdentity,
): Promise<"printed" | "silent" | "exited"> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (fileSize(log) > before) return "printed";
    if (!isSameProcess(identity)) return "exited";
    await new Promise((r) => setTimeout(r, 100));
  }
  return "silent";
}

/** Cold boot from the image with RAM in a shared file, then capture: stop, save device state, quit, commit. */
async function captureSnapshot(p: Prepared): Promise<void> {
  const { report, paths } = p.ctx;
  const method = p.method as SaveMethod;
  const staging = createStaging(p.ctx.layout.snapshots);
  const files = snapshotFiles(staging);
  try {
    const compressed = method !== "x-ignore-shared";
    await createOverlay(p.resolved.qemuImg, p.image.diskPath, files.disk);
    const vm = await coldBoot(
      p,
      files.disk,
      compressed ? { kind: "anonymous" } : { kind: "file", path: files.ram, share: true },
    );
    report.step("capturing the snapshot");
    const started = Date.now();
    try {
      await holdingAgent(p.ctx, vm, async () => {
        report.mark("guest agent channel open");
        await vm.qmp.stop();
        await saveVmState(vm.qmp, { method, path: files.state, timeoutMs: 120_000 });
        report.mark("device state saved");
      });
    } catch (error) {
      await abandon(vm, paths);
      throw error;
    }
    await terminate(vm.identity, vm.qmp);
    report.mark("QEMU ended");
    removeRuntimeFiles(paths);
    if (compressed) {
      report.step("compressing the snapshot");
      await compressState(files.state, files.compressedState);
      rmSync(files.state);
    }
    writeSnapshotManifest(files, {
      fingerprint: fingerprint(p, method),
      createdAt: new Date().toISOString(),
      configHash: p.configHash,
      stateBytes: statSync(compressed ? files.compressedState : files.state).size,
      ramBytes: compressed ? 0 : statSync(files.ram).size,
      compressed,
      captureMs: ms(started),
    });
    commitStaging(staging, p.snapshot.dir);
    report.info(`snapshot captured in ${ms(started)} ms (${method})`);
    // Made once the disk is at its final path, which the overlay names as its backing file. Optional: without
    // it a resume runs qemu-img.
    await createOverlay(p.resolved.qemuImg, p.snapshot.disk, p.snapshot.overlayTemplate).catch(
      () => undefined,
    );
  } catch (error) {
    rmSync(staging, { recursive: true, force: true });
    throw error;
  }
}

async function resumeSnapshot(p: Prepared): Promise<Outcome> {
  const { report, paths } = p.ctx;
  const { manifest } = readSnapshot(p.snapshot);
  if (!manifest) throw new EmulatorError("SNAPSHOT_INVALID", "the snapshot disappeared");
  report.step("resuming the snapshot");
  if (existsSync(p.snapshot.overlayTemplate)) copyFileSync(p.snapshot.overlayTemplate, paths.disk);
  else await createOverlay(p.resolved.qemuImg, p.snapshot.disk, paths.disk);
  recordInstanceDisk(p);
  const ram: RamSpec = manifest.compressed
    ? { kind: "anonymous" }
    : { kind: "file", path: p.snapshot.ram, share: false };
  // A compressed stream is unpacked next to the instance for the restore and removed right after.
  const unpacked = manifest.compressed ? join(paths.dir, "restore.state") : undefined;
  let vm: LiveVm | undefined;
  try {
    if (unpacked) await decompressState(p.snapshot.compressedState, unpacked);
    vm = await launch(p, paths.disk, ram, {
      method: manifest.fingerprint.method as SaveMethod,
      state: unpacked ?? p.snapshot.state,
    });
    if (unpacked) rmSync(unpacked, { force: true });
    const rotation = await settleResumedGuest(p, vm, manifest.configHash, {
      rotate: true,
      what: "snapshot resume",
    });
    return {
      vm,
      boot: "snapshot",
      ram,
      rotation: rotation ?? "skipped",
      method: manifest.fingerprint.method as SaveMethod,
    };
  } catch (error) {
    await abandon(vm, paths);
    if (unpacked) rmSync(unpacked, { force: true });
    rmSync(paths.disk, { force: true });
    throw error;
  }
}

async function resumeSuspended(p: Prepared, record: SuspendRecord): Promise<Outcome> {
  const { report, paths } = p.ctx;
  report.step("resuming where the last stop left off");
  // A state saved with the placeholders (or one whose keys file is gone, or from before states said) is rotated now.
  const holdsOwnKeys = record.rotation === "rotated" && existsSync(paths.keys);
  let vm: LiveVm | undefined;
  try {
    vm = await launch(p, paths.disk, record.ram, { method: record.method, state: suspendStateFile(paths) });
    // The disk now moves on from the saved state: that state must never be resumed again.
    rmSync(paths.suspend, { recursive: true, force: true });
    const rotation = await settleResumedGuest(p, vm, record.configHash, {
      rotate: !holdsOwnKeys,
      what: "quick-boot resume",
    });
    return {
      vm,
      boot: "quick-boot",
      ram: record.ram,
      rotation: rotation ?? "rotated",
      method: record.method,
    };
  } catch (error) {
    await abandon(vm, paths);
    throw error;
  }
}

async function coldBootAndRotate(p: Prepared, disk: string): Promise<Outcome> {
  const ram: RamSpec = { kind: "anonymous" };
  const vm = await coldBoot(p, disk, ram);
  try {
    const rotation = await withAgent(p.ctx, vm, (qga) => rotateSecrets(p, qga));
    await waitServices(p, vm, 60_000, "after rotation");
    return { vm, boot: "cold", ram, rotation };
  } catch (error) {
    await abandon(vm, p.ctx.paths);
    throw error;
  }
}

export interface StartOptions {
  selector: ImageSelector;
  image: Image;
  noSnapshot: boolean;
  noRotation: boolean;
}

export interface StartResult {
  alreadyRunning: boolean;
  state: InstanceState;
}

/** Kills a QEMU we launched whose start never completed (pid file present, no state). */
async function recoverOrphan(paths: InstancePaths): Promise<void> {
  let pid: number;
  try {
    pid = Number.parseInt(readFileSync(paths.pidFile, "utf8"), 10);
  } catch {
    return;
  }
  const identity = identify(pid);
  // The pid file may be stale and its pid reused: only a process started with our pid file is ours to kill.
  if (identity && commandLine(pid).includes(paths.pidFile)) await terminate(identity);
  removeRuntimeFiles(paths);
}

/** Everything a boot needs, checked before any VM starts: ports free, QEMU found, config disk written. */
async function prepare(ctx: Context, options: StartOptions): Promise<Prepared> {
  const { paths, report, layout, env } = ctx;
  await recoverOrphan(paths);
  removeAbandonedStaging(layout.snapshots);
  removeAbandonedStaging(paths.dir);
  const { image } = options;
  const services = resolveServicePorts(image.manifest.services, env);
  await assertPortsFree(services);
  const resolved = await resolveMachine(image, layout, env);
  if (resolved.accelNote) report[resolved.accelNote.level](resolved.accelNote.message);
  const config = runtimeConfig(services, ctx.name);
  await writeConfigDisk(paths.configIso, image.manifest.configIso.volumeId, config);
  const method = options.noSnapshot ? undefined : snapshotMethod(resolved, env);
  return {
    ctx,
    image,
    selector: options.selector,
    resolved,
    services,
    config,
    configHash: configHash(config),
    snapshot: snapshotFiles(pristineSnapshotDir(layout, image.manifest.name)),
    noSnapshot: options.noSnapshot,
    noRotation: options.noRotation,
    ...(method ? { method } : {}),
  };
}

/** Runs `fn` holding the instance lock, with the instance directory in place and the log file attached. */
async function locked<T>(ctx: Context, purpose: string, fn: () => Promise<T>): Promise<T> {
  mkdirSync(ctx.paths.dir, { recursive: true, mode: 0o700 });
  ctx.report.logTo(ctx.paths.cliLog);
  const lock = acquireLock(ctx.paths.lock, purpose);
  try {
    return await fn();
  } finally {
    lock.release();
    ctx.report.done();
  }
}

/** The running instance, or undefined after cleaning up what a vanished one left behind. */
function liveState(ctx: Context): InstanceState | undefined {
  const existing = readState(ctx.paths);
  if (existing && isSameProcess(existing.qemu)) return existing;
  if (existing) {
    ctx.report.warn(`QEMU (pid ${existing.qemu.pid}) of the last start is gone; cleaning up`);
    clearState(ctx.paths);
  }
  return undefined;
}

export async function start(ctx: Context, options: StartOptions): Promise<StartResult> {
  return locked(ctx, "start", async () => {
    const started = Date.now();
    const running = liveState(ctx);
    if (running) return { alreadyRunning: true, state: running };
    const p = await prepare(ctx, options);
    const { outcome, fallbackReason } = await bootSomehow(p);
    const { paths } = ctx;
    const { image, resolved } = p;
    const state: InstanceState = {
      version: 1,
      name: ctx.name,
      image: {
        selector: describeSelector(options.selector),
        name: image.manifest.name,
        dir: image.dir,
        digest: image.manifest.digest,
      },
      qemu: {
        ...outcome.vm.identity,
        binary: resolved.machine.qemu,
        version: resolved.abilities.version.text,
      },
      accel: resolved.machine.accel,
      services: p.services,
      boot: outcome.boot,
      rotation: outcome.rotation,
      configHash: p.configHash,
      startedAt: new Date().toISOString(),
      readyMs: ms(started),
      socketDir: paths.socketDir,
      suspendFingerprint: fingerprint(p, SUSPEND_METHOD),
      ...(outcome.method ? { snapshotMethod: outcome.method } : {}),
      ...(outcome.ram.kind === "file" ? { ramFile: outcome.ram.path } : {}),
      ...(fallbackReason ? { fallbackReason } : {}),
    };
    writeState(paths, state);
    await outcome.vm.qmp.close().catch(() => undefined);
    return { alreadyRunning: false, state };
  });
}

/** Captures the image's snapshot on demand: a cold boot that ends in a snapshot and no running VM. */
export async function capture(
  ctx: Context,
  options: StartOptions,
): Promise<{ method: SaveMethod; snapshotDir: string }> {
  return locked(ctx, "capture", async () => {
    if (liveState(ctx)) {
      throw new EmulatorError(
        "RUNNING",
        "the emulator is running on the ports a capture needs",
        "stop it first: stack-emulator stop",
      );
    }
    const p = await prepare(ctx, { ...options, noSnapshot: false });
    if (existsSync(ctx.paths.disk) && !setAsideForeignDisk(p)) {
      throw new EmulatorError(
        "INSTANCE_HAS_DATA",
        "this instance's disk builds on the current snapshot; recapturing would pull it out from under the data",
        "`stack-emulator reset` first (it deletes this instance's data), or capture for another --instance",
      );
    }
    await captureSnapshot(p);
    return { method: p.method as SaveMethod, snapshotDir: p.snapshot.dir };
  });
}

/** Tries the fastest path that applies, falling back step by step; every fallback says why. */
async function bootSomehow(p: Prepared): Promise<{ outcome: Outcome; fallbackReason?: string }> {
  const { paths, report } = p.ctx;
  const reasons: string[] = [];
  const fellBack = (why: string) => {
    reasons.push(why);
    report.warn(why);
  };
  const result = (outcome: Outcome) => ({
    outcome,
    ...(reasons.length ? { fallbackReason: reasons.join("; ") } : {}),
  });
  const foreign = setAsideForeignDisk(p);
  if (foreign) fellBack(foreign);
  // A failure no other path can avoid ends the start instead of being tried again another way.
  const fellBackFrom = (error: unknown, why: (message: string) => string) => {
    if (error instanceof EmulatorError && error.code === "ACCEL_UNUSABLE") throw error;
    fellBack(why((error as Error).message));
  };

  if (existsSync(paths.disk)) {
    const record = readSuspend(paths);
    if (record && p.noSnapshot) {
      fellBack(
        "snapshots are off (EMULATOR_NO_SNAPSHOT=1): the saved state is dropped, booting from the instance disk",
      );
    } else if (record) {
      const differences = fingerprintDifferences(record.fingerprint, fingerprint(p, record.method));
      const ramMissing = record.ram.kind === "file" && !existsSync(record.ram.path);
      if (differences.length === 0 && !ramMissing) {
        try {
          return result(await resumeSuspended(p, record));
        } catch (error) {
          fellBackFrom(
            error,
            (m) => `resuming the saved state failed (${m}); booting from the instance disk`,
          );
        }
      } else {
        fellBack(
          `the saved state cannot be resumed (${ramMissing ? "its RAM file is gone" : differences.join(", ")}); booting from the instance disk`,
        );
      }
    }
    rmSync(paths.suspend, { recursive: true, force: true });
    return result(await coldBootAndRotate(p, paths.disk));
  }

  if (p.method) {
    const { manifest, problem } = readSnapshot(p.snapshot);
    let usable = Boolean(manifest);
    if (manifest) {
      const differences = fingerprintDifferences(manifest.fingerprint, fingerprint(p, p.method));
      if (differences.length > 0) {
        usable = false;
        fellBack(`the snapshot does not fit this host any more (${differences.join(", ")}); recapturing`);
      }
    } else if (problem !== "no snapshot") {
      fellBack(`${problem}; recapturing`);
    }
    if (usable) {
      try {
        return result(await resumeSnapshot(p));
      } catch (error) {
        fellBackFrom(error, (m) => `resuming the snapshot failed (${m}); recapturing`);
      }
    }
    try {
      await captureSnapshot(p);
      return result(await resumeSnapshot(p));
    } catch (error) {
      rmSync(paths.disk, { force: true });
      fellBackFrom(error, (m) => `snapshot capture or resume failed (${m}); cold booting without a snapshot`);
    }
  }
  await createOverlay(p.resolved.qemuImg, p.image.diskPath, paths.disk);
  recordInstanceDisk(p);
  return result(await coldBootAndRotate(p, paths.disk));
}

export interface StopResult {
  wasRunning: boolean;
  saved: boolean;
  warning?: string;
}

/** `save`: keep the running state for the next start; `powerdown`: shut the guest down; `discard`: just end it. */
export type StopMode = "save" | "powerdown" | "discard";

export async function stop(ctx: Context, options: { mode: StopMode }): Promise<StopResult> {
  if (!existsSync(ctx.paths.dir)) return { wasRunning: false, saved: false };
  return locked(ctx, "stop", () => stopLocked(ctx, options.mode));
}

/** Ends the instance without ceremony and deletes it (disk, saved state, keys); with `images`, images too. */
export async function reset(ctx: Context, options: { images: boolean }): Promise<StopResult> {
  const { paths, layout } = ctx;
  let result: StopResult = { wasRunning: false, saved: false };
  if (existsSync(paths.dir)) {
    result = await locked(ctx, "reset", async () => {
      const stopped = await stopLocked(ctx, "discard");
      // Everything but the lock goes while the lock is held; the lock itself goes when it is released.
      for (const entry of readdirSync(paths.dir)) {
        if (join(paths.dir, entry) !== paths.lock)
          rmSync(join(paths.dir, entry), { recursive: true, force: true });
      }
      return stopped;
    });
    rmSync(paths.dir, { recursive: true, force: true });
  }
  rmSync(paths.socketDir, { recursive: true, force: true });
  if (options.images) {
    rmSync(layout.images, { recursive: true, force: true });
    rmSync(layout.snapshots, { recursive: true, force: true });
  }
  return result;
}

async function stopLocked(ctx: Context, mode: StopMode): Promise<StopResult> {
  const { paths, report, env } = ctx;
  const state = readState(paths);
  if (!state || !isSameProcess(state.qemu)) {
    await recoverOrphan(paths);
    clearState(paths);
    return { wasRunning: false, saved: false };
  }
  let qmp: QmpClient | undefined;
  try {
    qmp = await connectQmp(paths, 5000);
  } catch {
    report.warn("QEMU does not answer on its control socket; stopping it with signals");
  }
  let saved = false;
  let warning: string | undefined;
  if (qmp && mode === "save") {
    try {
      report.step("saving the running state");
      await saveSuspend(ctx, qmp, state);
      saved = true;
    } catch (error) {
      warning = `could not save the running state (${(error as Error).message}); the next start boots from the disk`;
      report.warn(warning);
      await qmp.cont().catch(() => undefined);
    }
  }
  if (qmp && !saved && mode !== "discard") {
    report.step("powering down the guest");

    await qmp.systemPowerdown().catch(() => undefined);
    await waitForExit(state.qemu, seconds(env.STACK_EMULATOR_POWERDOWN_TIMEOUT, 10_000));
  }
  report.step("stopping QEMU");
  await terminate(state.qemu, qmp);
  removeRuntimeFiles(paths);
  clearState(paths);
  return { wasRunning: true, saved, ...(warning ? { warning } : {}) };
}

async function saveSuspend(ctx: Context, qmp: QmpClient, state: InstanceState): Promise<void> {
  const { paths } = ctx;
  const staging = createStaging(paths.dir);
  try {
    await holdingAgent(ctx, { identity: state.qemu, qmp }, async () => {
      await qmp.stop();
      await saveVmState(qmp, { method: SUSPEND_METHOD, path: join(staging, "state"), timeoutMs: 120_000 });
    });
    const record: SuspendRecord = {
      fingerprint: state.suspendFingerprint,
      method: SUSPEND_METHOD,
      ram: state.ramFile ? { kind: "file", path: state.ramFile, share: false } : { kind: "anonymous" },
      configHash: state.configHash,
      rotation: state.rotation,
      savedAt: new Date().toISOString(),
    };
    writeFileAtomic(join(staging, "suspend.json"), `${JSON.stringify(record, null, 2)}\n`);
    commitStaging(staging, paths.suspend);
  } catch (error) {
    rmSync(staging, { recursive: true, force: true });
    throw error;
  }
}
