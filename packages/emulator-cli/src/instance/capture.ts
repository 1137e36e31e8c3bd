import { rmSync, statSync } from "node:fs";
import { msSince } from "../core/context.js";
import { commitStaging, createStaging } from "../core/staging.js";
import { createOverlay } from "../vm/disks.js";
import { compressState, snapshotFiles, writeSnapshotManifest } from "../vm/snapshot.js";
import { type BootInputs, fingerprint } from "./boot-inputs.js";
import { coldBoot } from "./cold-boot.js";

/**
 * The image's snapshot: a cold boot from the image with RAM in a shared file, then stop, save the device state, quit,
 * and commit the staged files in one rename. Nothing is left behind by a failure.
 */
export async function captureSnapshot(
  inputs: BootInputs,
  method: NonNullable<BootInputs["method"]>,
): Promise<void> {
  const { report } = inputs.ctx;
  const staging = createStaging(inputs.ctx.layout.snapshots);
  const files = snapshotFiles(staging);
  try {
    const compressed = method !== "x-ignore-shared";
    await createOverlay(inputs.resolved.qemuImg, inputs.image.diskPath, files.disk);
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
    commitStaging(staging, inputs.snapshot.dir);
    report.info(`snapshot captured in ${msSince(started)} ms (${method})`);
    // Made once the disk is at its final path, which the overlay names as its backing file. Optional: without
    // it a resume runs qemu-img.
    await createOverlay(inputs.resolved.qemuImg, inputs.snapshot.disk, inputs.snapshot.overlayTemplate).catch(
      () => undefined,
    );
  } catch (error) {
    rmSync(staging, { recursive: true, force: true });
    throw error;
  }
}
