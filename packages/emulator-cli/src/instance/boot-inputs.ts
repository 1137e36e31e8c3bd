import { bestSaveMethod, type SaveMethod } from "@stack/qmp";
import { writeConfigDisk } from "../contract/config-disk.js";
import { configDiskFiles, contractServices, portPrefix } from "../contract/contract.js";
import { type Context, choiceFromEnv } from "../core/context.js";
import type { InstancePaths } from "../core/paths.js";
import { checkPortsFree, type ForwardedService, resolveServicePorts } from "../core/ports.js";
import { type ResolvedMachine, resolveMachine } from "../host/host.js";
import type { Image } from "../image/image.js";
import type { ImageSelector } from "../image/image-store.js";
import type { RamSpec } from "../vm/qemu-args.js";
import {
  type Fingerprint,
  fingerprintOf,
  pristineSnapshotDir,
  type SnapshotFiles,
  snapshotFiles,
} from "../vm/snapshot.js";

export interface StartOptions {
  selector: ImageSelector;
  image: Image;
  noSnapshot: boolean;
  noRotation: boolean;
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
  readonly snapshot: SnapshotFiles;
  readonly noRotation: boolean;
  /** The RAM this instance resumes its own saved state into (see instanceRam). */
  readonly ownRam: RamSpec;
}

/** Ports free, QEMU found and its accelerator proven, config disk written. */
export async function prepareBoot(ctx: Context, options: StartOptions): Promise<BootInputs> {
  const { paths, report, layout, env } = ctx;
  const { image } = options;
  const prefix = portPrefix(env);
  const ports = await checkPortsFree(resolveServicePorts(contractServices(prefix), env));
  for (const note of ports.notes) report.warn(note);
  const { services } = ports;
  const resolved = await resolveMachine(image, layout, env);
  if (resolved.accelNote) report[resolved.accelNote.level](resolved.accelNote.message);
  const config = configDiskFiles(prefix, services);
  await writeConfigDisk(paths.configIso, config.files);
  const method = options.noSnapshot ? undefined : snapshotMethod(resolved, env);
  return {
    ctx,
    image,
    selector: options.selector,
    resolved,
    prefix,
    services,
    configHash: config.hash,
    snapshot: snapshotFiles(pristineSnapshotDir(layout, image.manifest.name)),
    noRotation: options.noRotation,
    ownRam: instanceRam({ resolved, image }, paths, env),
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
 * STACK_EMULATOR_INSTANCE_RAM=file|anonymous decides instead; without x-ignore-shared RAM is always anonymous.
 */
function instanceRam(
  inputs: { resolved: ResolvedMachine; image: Image },
  paths: InstancePaths,
  env: NodeJS.ProcessEnv,
): RamSpec {
  const choice = choiceFromEnv(env, "STACK_EMULATOR_INSTANCE_RAM", {
    choices: ["file", "anonymous"],
    isNot: "a kind of guest RAM",
    unsetMeans: "decide by the image's RAM size",
  });
  const { abilities } = inputs.resolved;
  const fileWorks =
    abilities.memoryBackendFile && abilities.migrationCapabilities.includes("x-ignore-shared");
  const wanted = choice ?? (inputs.image.manifest.memoryMiB >= OWN_RAM_FILE_FROM_MIB ? "file" : "anonymous");
  return fileWorks && wanted === "file"
    ? { kind: "file", path: paths.ram, share: true }
    : { kind: "anonymous" };
}

/**
 * The snapshot method this QEMU supports best (@stack/qmp's policy): guest RAM in a file skipped by
 * `x-ignore-shared` makes a capture write only device state and a resume map RAM lazily; otherwise the whole guest
 * goes into a migration stream, stored compressed. STACK_EMULATOR_SNAPSHOT_METHOD=stream forces the stream.
 */
function snapshotMethod(resolved: ResolvedMachine, env: NodeJS.ProcessEnv): SaveMethod {
  const { abilities } = resolved;
  const forced = choiceFromEnv(env, "STACK_EMULATOR_SNAPSHOT_METHOD", {
    choices: ["x-ignore-shared", "stream"],
    isNot: "a snapshot method",
    unsetMeans: "let the host decide",
  });
  return bestSaveMethod({
    version: abilities.version,
    migrationCapabilities: abilities.migrationCapabilities,
    sharedRam: abilities.memoryBackendFile && forced !== "stream",
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
