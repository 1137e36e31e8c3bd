import { copyFileSync, existsSync, rmSync } from "node:fs";
import type { SaveMethod } from "@stack/qmp";
import { EmulatorError } from "../core/errors.js";
import { settleResumedGuest } from "../guest/guest.js";
import { loadKeys } from "../guest/secrets.js";
import { copyRamFile, createOverlay, makeInstanceDisk } from "../vm/disks.js";
import type { RamSpec } from "../vm/qemu-args.js";
import { removeRuntimeFiles } from "../vm/qemu-process.js";
import { decompressState, readSnapshot } from "../vm/snapshot.js";
import { withStoreLock } from "../vm/snapshot-store.js";
import type { Vm } from "../vm/vm.js";
import { type BootInputs, guestWork } from "./boot-inputs.js";
import type { BootOutcome } from "./cold-boot.js";
import { launchVm } from "./launch.js";
import { dropSuspend, ramOutsideStream, type SuspendRecord } from "./suspend.js";

/** The image's snapshot, resumed on a new instance disk (an overlay on the snapshot's disk) with fresh keys. */
export async function resumeSnapshot(inputs: BootInputs): Promise<BootOutcome> {
  const { report, paths } = inputs.ctx;
  const { snapshot } = inputs;
  if (!snapshot) throw new EmulatorError("SNAPSHOT_INVALID", "the snapshot disappeared");
  report.step("resuming the snapshot");
  // From here on the instance disk names the snapshot as its base: a clean-up keeps it.
  const manifest = await withStoreLock(inputs.ctx.layout, "resume", async () => {
    const found = readSnapshot(snapshot).manifest;
    if (!found) throw new EmulatorError("SNAPSHOT_INVALID", "the snapshot disappeared");
    await makeInstanceDisk(paths, inputs.image.manifest.digest, (disk) =>
      existsSync(snapshot.overlayTemplate)
        ? copyFileSync(snapshot.overlayTemplate, disk)
        : createOverlay(inputs.resolved.qemuImg, snapshot.disk, disk),
    );
    return found;
  });
  const method = manifest.fingerprint.method as SaveMethod;
  // An instance that keeps its own RAM file starts it as a copy of the snapshot's (a clone where the file system
  // has them), so that even its first stop saves device state only; others map the snapshot's file copy-on-write.
  const ownCopy = !manifest.compressed && inputs.ownRam.kind === "file";
  const ram: RamSpec = manifest.compressed
    ? { kind: "anonymous" }
    : ownCopy
      ? inputs.ownRam
      : { kind: "file", path: snapshot.ram, share: false };
  // A compressed stream is unpacked next to the instance for the restore and removed right after.
  const unpacked = manifest.compressed ? paths.restoreState : undefined;
  let vm: Vm | undefined;
  try {
    if (unpacked) await decompressState(snapshot.compressedState, unpacked);
    if (ownCopy) {
      await copyRamFile(snapshot.ram, paths.ram);
      report.mark("RAM file copied");
    }
    vm = await launchVm(inputs, paths.disk, ram, {
      method,
      state: unpacked ?? snapshot.state,
      ...(ownCopy ? { ownsRamFile: true } : {}),
    });
    if (unpacked) rmSync(unpacked, { force: true });
    const rotation = await settleResumedGuest(guestWork(inputs, vm), {
      rotate: true,
      configChanged: manifest.configHash !== inputs.configHash,
      what: "snapshot resume",
    });
    return { vm, boot: "snapshot", ram, rotation: rotation ?? "skipped", method };
  } catch (error) {
    await endOrClean(vm, inputs);
    if (unpacked) rmSync(unpacked, { force: true });
    if (ownCopy) rmSync(paths.ram, { force: true });
    rmSync(paths.disk, { force: true });
    throw error;
  }
}

/** Where the last `stop` left off: same disk, same RAM; keys rotated now only if the saved guest lacks its own. */
export async function resumeSaved(inputs: BootInputs, record: SuspendRecord): Promise<BootOutcome> {
  const { report, paths } = inputs.ctx;
  report.step("resuming where the last stop left off");
  // A state saved with the placeholders (or one whose keys file is gone, or from before states said) is rotated now.
  const holdsOwnKeys =
    record.rotation === "rotated" && loadKeys(paths.keys, (message) => report.warn(message)) !== undefined;
  const ownsRamFile = record.ram.kind === "file" && record.ram.share;
  // A stream carries the whole RAM: it is loaded into a fresh file, not over what an earlier run left there.
  if (ownsRamFile && !ramOutsideStream(record)) rmSync(paths.ram, { force: true });
  let vm: Vm | undefined;
  try {
    vm = await launchVm(inputs, paths.disk, record.ram, {
      method: record.method,
      state: paths.suspendState,
      ownsRamFile,
      ...(record.shareDevice ? { shareDevice: true } : {}),
    });
    dropSuspend(paths);
    const rotation = await settleResumedGuest(guestWork(inputs, vm), {
      rotate: !holdsOwnKeys,
      configChanged: record.configHash !== inputs.configHash,
      what: "quick-boot resume",
    });
    return {
      vm,
      boot: "quick-boot",
      ram: record.ram,
      rotation: rotation ?? "rotated",
      method: record.method,
      ...(record.shareDevice ? { shareDevice: true } : {}),
    };
  } catch (error) {
    await endOrClean(vm, inputs);
    throw error;
  }
}

/** After a failed resume: the VM ended, or with none started, what a QEMU that failed at launch left. */
async function endOrClean(vm: Vm | undefined, inputs: BootInputs): Promise<void> {
  if (vm) await vm.end();
  else removeRuntimeFiles(inputs.ctx.paths);
}
