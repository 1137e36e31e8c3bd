import { bestSaveMethod, type SaveMethod } from "@stack/qmp";
import { writeConfigDisk } from "../contract/config-disk.js";
import { configDiskFiles, contractServices } from "../contract/contract.js";
import type { Context } from "../core/context.js";
import { checkPortsFree, type ForwardedService, forwardServices } from "../core/ports.js";
import type { Settings } from "../core/settings.js";
import type { GuestWork } from "../guest/guest.js";
import { type ResolvedMachine, resolveMachine } from "../host/host.js";
import type { Image } from "../image/image.js";
import type { ImageSelector } from "../image/image-store.js";
import type { RamSpec } from "../vm/qemu-args.js";
import { type Fingerprint, fingerprintOf, type SnapshotFiles, snapshotFiles } from "../vm/snapshot.js";
import { snapshotGenerations } from "../vm/snapshot-store.js";

export interface StartOptions {
  selector: ImageSelector;
  image: Image;
  /** The host port of each service, from the port plan. */
  ports: Record<string, number>;
}

/** Everything a boot needs, checked before any VM starts. Never changed: a new machine is a new value. */
export interface BootInputs {
  readonly ctx: Context;
  readonly image: Image;
  readonly selector: ImageSelector;
  readonly resolved: ResolvedMachine;
  /** The guest's port prefix: its ports are `${prefix}01`... from boot on, so it is frozen into a snapshot. */
  readonly prefix: string;
  readonly services: ForwardedService[];
  readonly configHash: string;
  /** How snapshots are captured on this host; undefined when snapshots are off. */
  readonly method?: SaveMethod;
  /** The image's current snapshot generation, when it has one (see snapshot-store). */
  readonly snapshot?: SnapshotFiles;
  readonly noRotation: boolean;
  /** The RAM this instance resumes its own saved state into (see instanceRam). */
  readonly ownRam: RamSpec;
}

/** Ports free, QEMU found and its accelerator proven, config disk written. */
export async function prepareBoot(ctx: Context, options: StartOptions): Promise<BootInputs> {
  const { paths, report, layout, settings } = ctx;
  const { image } = options;
  const prefix = settings.portPrefix;
  const ports = await checkPortsFree(forwardServices(contractServices(prefix), options.ports));
  for (const note of ports.notes) report.warn(note);
  const { services } = ports;
  const resolved = await resolveMachine(image, settings);
  if (resolved.accelNote) report[resolved.accelNote.level](resolved.accelNote.message);
  const config = configDiskFiles(prefix, services);
  await writeConfigDisk(paths.configIso, config.files);
  const method = settings.noSnapshot ? undefined : snapshotMethod(resolved, settings);
  const { current } = snapshotGenerations(layout, image.manifest.name);
  return {
    ctx,
    image,
    selector: options.selector,
    resolved,
    prefix,
    services,
    configHash: config.hash,
    ...(current ? { snapshot: snapshotFiles(current) } : {}),
    noRotation: settings.noRotation,
    ownRam: instanceRam({ resolved, image }, ctx),
    ...(method ? { method } : {}),
  };
}

/** From this guest RAM size up, an instance keeps its RAM in its own file between stops (see instanceRam). */
const OWN_RAM_FILE_FROM_MIB = 1024;

/**
 * Where this instance's RAM lives between a stop and the next start. In its own file, shared, QEMU can skip it when
 * saving (`x-ignore-shared`): a `stop` writes device state only and the next start maps the file again, in time that
 * does not grow with the RAM size. A snapshot resume starts the file as a sparse copy of the snapshot's (done
 * 0.3-0.5 s into the command for 400 MiB on ext4 here, a clone on btrfs/XFS/APFS); the first stop after a cold
 * boot writes the RAM as a stream, which the next start loads into the file. Small guests, whose whole-RAM stream
 * saves and loads in under a second, keep anonymous RAM: for the 256 MiB dev image the copy would add a tenth of a
 * second to every resume.
 * STACK_EMULATOR_INSTANCE_RAM=file|anonymous (settings.instanceRam) decides instead; without x-ignore-shared RAM is
 * always anonymous.
 */
function instanceRam(inputs: { resolved: ResolvedMachine; image: Image }, ctx: Context): RamSpec {
  const { abilities } = inputs.resolved;
  const fileWorks =
    abilities.memoryBackendFile && abilities.migrationCapabilities.includes("x-ignore-shared");
  const wanted =
    ctx.settings.instanceRam ??
    (inputs.image.manifest.memoryMiB >= OWN_RAM_FILE_FROM_MIB ? "file" : "anonymous");
  return fileWorks && wanted === "file"
    ? { kind: "file", path: ctx.paths.ram, share: true }
    : { kind: "anonymous" };
}

/**
 * The snapshot method this QEMU supports best (@stack/qmp's policy): guest RAM in a file skipped by
 * `x-ignore-shared` makes a capture write only device state and a resume map RAM lazily; otherwise the whole guest
 * goes into a migration stream, stored compressed. STACK_EMULATOR_SNAPSHOT_METHOD=stream forces the stream.
 */
function snapshotMethod(resolved: ResolvedMachine, settings: Settings): SaveMethod {
  const { abilities } = resolved;
  return bestSaveMethod({
    version: abilities.version,
    migrationCapabilities: abilities.migrationCapabilities,
    sharedRam: abilities.memoryBackendFile && settings.snapshotMethod !== "stream",
  });
}

/** What a state saved now would depend on, for a VM of these inputs saved with `method`. */
export function fingerprint(inputs: BootInputs, method: SaveMethod): Fingerprint {
  return fingerprintOf(
    inputs.resolved.machine,
    inputs.resolved.abilities.version.text,
    inputs.image,
    method,
    inputs.prefix,
  );
}

/** The same boot on tcg: how an accelerator that failed is left behind. */
export function onTcg(inputs: BootInputs): BootInputs {
  const { resolved } = inputs;
  return { ...inputs, resolved: { ...resolved, machine: { ...resolved.machine, accel: "tcg" } } };
}

/**
 * How long the guest's own work may take: a command through the agent, or its services' health after a resume. The
 * image may set it (a systemd guest under TCG needs minutes where the dev image needs seconds); the user may
 * override it (STACK_EMULATOR_GUEST_TIMEOUT, the original's EMULATOR_SNAPSHOT_READY_TIMEOUT); 45 s otherwise.
 */
function guestTimeoutMs(inputs: BootInputs): number {
  const fromImage = inputs.image.manifest.timeoutSeconds;
  const imageMs = typeof fromImage === "number" && fromImage > 0 ? fromImage * 1000 : 45_000;
  return inputs.ctx.settings.timeouts.guestMs ?? imageMs;
}

/** The guest's side of a boot of these inputs on `vm`. */
export function guestWork(inputs: BootInputs, vm: GuestWork["vm"]): GuestWork {
  const { ctx } = inputs;
  return {
    vm,
    report: ctx.report,
    paths: ctx.paths,
    guestTimeoutMs: guestTimeoutMs(inputs),
    bootTimeoutMs: ctx.settings.timeouts.bootMs,
    noRotation: inputs.noRotation,
  };
}
