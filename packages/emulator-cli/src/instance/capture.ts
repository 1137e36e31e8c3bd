import { mkdirSync, rmSync, statSync } from "node:fs";
import { msSince } from "../core/context.js";
import { requireFreeSpace } from "../core/disk-space.js";
import { commitStaging, createStaging } from "../core/staging.js";
import { createOverlay } from "../vm/disks.js";
import { compressState, type SnapshotFiles, snapshotFiles, writeSnapshotManifest } from "../vm/snapshot.js";
import { newSnapshotDir, publishSnapshot, stableImageDisk, withStoreLock } from "../vm/snapshot-store.js";
import { type BootInputs, fingerprint } from "./boot-inputs.js";
import { coldBoot } from "./cold-boot.js";
import { removeUnusedSnapshots } from "./store.js";

/**
 * A new snapshot of the image: a cold boot from the image with RAM in a shared file, then stop, save the device
 * state, quit, and commit the staged files in one rename as a new generation, which becomes the current one; the
 * generations nothing uses any more go (see store.ts). Nothing is left behind by a failure.
 */
export async function captureSnapshot(
  inputs: BootInputs,
  method: NonNullable<BootInputs["method"]>,
): Promise<SnapshotFiles> {
  const { report, layout } = inputs.ctx;
  const compressed = method !== "x-ignore-shared";
  // The guest's RAM (a file, or a stream that is compressed after), the device state and what the boot writes.
  mkdirSync(layout.snapshots, { recursive: true, mode: 0o700 });
  requireFreeSpace(layout.snapshots, (inputs.image.manifest.memoryMiB + 512) * 1024 * 1024, {
    what: "capturing the snapshot",
    otherwise: "or EMULATOR_NO_SNAPSHOT=1 to boot without one",
  });
  const staging = createStaging(layout.snapshots);
  const files = snapshotFiles(staging);
  let captured: SnapshotFiles;
  try {
    await createOverlay(inputs.resolved.qemuImg, stableImageDisk(layout, inputs.image), files.disk);
    const vm = await coldBoot(
      inputs,
      files.disk,
      compressed ? { kind: "anonymous" } : { kind: "file", path: files.ram, share: true },
    );
    report.step("capturing the snapshot");
    const started = Date.now();
    try {
      await vm.save(method, files.state);
      report.mark("device state saved");
    } finally {
      // Captured or not, this VM has done its work: a snapshot is resumed in a new QEMU.
      await vm.end();
    }
    report.mark("QEMU ended");
    if (compressed) {
      report.step("compressing the snapshot");
      await compressState(files.state, files.compressedState);
      rmSync(files.state);
    }
    writeSnapshotManifest(files, {
      fingerprint: fingerprint(inputs, method),
      createdAt: new Date().toISOString(),
      configHash: inputs.configHash,
      stateBytes: statSync(compressed ? files.compressedState : files.state).size,
      ramBytes: compressed ? 0 : statSync(files.ram).size,
      compressed,
      captureMs: msSince(started),
    });
    captured = await withStoreLock(layout, "capture", async () => {
      const committed = snapshotFiles(newSnapshotDir(layout, inputs.image.manifest.name));
      commitStaging(staging, committed.dir);
      // Made once the disk is at its final path, which the overlay names as its backing file. Optional: without
      // it a resume runs qemu-img.
      await createOverlay(inputs.resolved.qemuImg, committed.disk, committed.overlayTemplate).catch(
        () => undefined,
      );
      publishSnapshot(committed.dir);
      return committed;
    });
    report.mark("snapshot committed");
    report.info(`snapshot captured in ${msSince(started)} ms (${method})`);
  } catch (error) {
    rmSync(staging, { recursive: true, force: true });
    throw error;
  }
  // The snapshot is in place whatever becomes of the older ones.
  try {
    await removeUnusedSnapshots(inputs.ctx);
  } catch (error) {
    report.warn(`older snapshots were not removed: ${(error as Error).message}`);
  }
  return captured;
}
