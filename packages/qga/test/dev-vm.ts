import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const builder = fileURLToPath(new URL("../../../guest/build-dev-image", import.meta.url));
/** Shared with the other VM test suites: the builder's content cache makes every build after the first a check. */
const imageDir = `${join(tmpdir(), "stack-emulator-test-images", "dev")}/`;
const manifestPath = `${imageDir}image.json`;

/** Builds (or finds up to date) the offline dev image; it runs qemu-ga on org.qemu.guest_agent.0. */
export function buildDevImage(): void {
  execFileSync(builder, ["--out", imageDir], { stdio: ["ignore", "ignore", "inherit"] });
}

interface Manifest {
  boot: { kernel?: string; initrd?: string; append?: string };
  disk: string;
  memoryMiB: number;
}

export interface DevVm {
  dir: string;
  /** QEMU's end of the guest agent's virtio-serial port. */
  socketPath: string;
  stop(): Promise<void>;
}

/** Boots the dev image under TCG with its guest agent port on a unix socket; the image itself is never written. */
export async function bootDevImage(): Promise<DevVm> {
  const manifest = JSON.parse(readFileSync(manifestPath, "utf8")) as Manifest;
  const { kernel, initrd, append } = manifest.boot;
  if (!kernel || !initrd) throw new Error(`${manifestPath} does not boot a kernel directly`);
  const dir = await mkdtemp("/tmp/qga-vm-");
  const socketPath = `${dir}/qga.sock`;
  // TCG: this host's KVM cannot boot a stock kernel (see docs); snapshot=on keeps the disk image untouched.
  const qemu: ChildProcess = spawn(
    "qemu-system-x86_64",
    [
      ...["-accel", "tcg", "-cpu", "max", "-m", String(manifest.memoryMiB), "-smp", "1"],
      ...["-display", "none", "-monitor", "none", "-serial", `file:${dir}/console.log`, "-no-reboot"],
      ...["-kernel", `${imageDir}${kernel}`, "-initrd", `${imageDir}${initrd}`, "-append", append ?? ""],
      ...["-drive", `file=${imageDir}${manifest.disk},if=virtio,snapshot=on`],
      ...["-device", "virtio-serial", "-chardev", `socket,id=qga,path=${socketPath},server=on,wait=off`],
      ...["-device", "virtserialport,chardev=qga,name=org.qemu.guest_agent.0"],
    ],
    { stdio: ["ignore", "ignore", "inherit"] },
  );
  const exited = new Promise((resolve) => qemu.once("exit", resolve));
  return {
    dir,
    socketPath,
    async stop() {
      if (qemu.exitCode === null && qemu.signalCode === null) qemu.kill("SIGKILL");
      await exited;
      await rm(dir, { recursive: true, force: true });
    },
  };
}
