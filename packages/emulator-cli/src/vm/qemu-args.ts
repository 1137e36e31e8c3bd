import type { Firmware } from "@stack/host-detect";
import { memoryBackend } from "@stack/qmp";
import * as v from "valibot";
import { SHARE } from "../contract/contract.js";
import type { InstancePaths } from "../core/paths.js";
import type { ForwardedService } from "../core/ports.js";
import { CPU_MODEL, type MachineSpec, machineType } from "../host/machine.js";
import type { Image } from "../image/image.js";

/** Bump when the device layout changes: snapshots captured with another layout cannot be resumed. */
export const DEVICE_LAYOUT_VERSION = 4;
const RAM_BACKEND_ID = "ram0";

export type RamSpec =
  | { kind: "anonymous" }
  /** Guest RAM in a file: shared while capturing a snapshot, private copy-on-write when resuming one. */
  | { kind: "file"; path: string; share: boolean };

export const ramSpecSchema: v.GenericSchema<unknown, RamSpec> = v.variant("kind", [
  v.object({ kind: v.literal("anonymous") }),
  v.object({ kind: v.literal("file"), path: v.string(), share: v.boolean() }),
]);

export interface LaunchSpec {
  machine: MachineSpec;
  image: Image;
  paths: InstancePaths;
  /** The writable disk: an overlay on the image's disk or on a snapshot's disk. */
  disk: string;
  /** Forwarded from the host at launch: a start's private ports (see Vm.publish). */
  services: ForwardedService[];
  ram: RamSpec;
  incoming: boolean;
  /**
   * The config-file share's 9p device is on the command line: a saved state recorded with it plugged in. Otherwise
   * it is hot-plugged when needed (shareDeviceArgs) into the root port every layout reserves for it.
   */
  shareDevice?: boolean;
}

/** The 9p device of the config-file share, as -device or QMP device_add properties. */
export const SHARE_DEVICE = {
  driver: "virtio-9p-pci",
  id: SHARE.deviceId,
  fsdev: SHARE.fsdevId,
  mount_tag: SHARE.tag,
  bus: SHARE.rootPortId,
} as const;

/** QEMU option values escape a comma by doubling it. */
function opt(value: string): string {
  return value.replaceAll(",", ",,");
}

/**
 * UEFI: split flash gets the code read-only and a per-instance copy of the variable store; a memory-mapped image
 * goes through -bios.
 */
function firmwareArgs(firmware: Firmware | undefined, paths: InstancePaths): string[] {
  if (!firmware) return [];
  if (firmware.device !== "flash") return ["-bios", firmware.code];
  const args = ["-drive", `if=pflash,format=${firmware.format},readonly=on,file=${opt(firmware.code)}`];
  if (firmware.vars)
    args.push("-drive", `if=pflash,format=${firmware.format},file=${opt(paths.firmwareVars)}`);
  return args;
}

/** The guest's network (QEMU user networking): the port forwards of a running VM are changed by this id. */
export const NETDEV_ID = "net0";

/**
 * The QEMU command line. Every device has a fixed id and PCI address so a snapshot taken by one process
 * resumes in another; what may change between them (ports, file paths) lives outside migrated state. Addresses
 * and MAC are the ones guest/build-image provisions the real image with (a test keeps them equal): the cloud
 * image's network config matches the MAC.
 */

export function buildQemuArgs(spec: LaunchSpec): string[] {
  const { machine, image, paths, services, ram } = spec;
  const m = image.manifest;
  const machineProps = [machineType(machine.arch)];
  const args: string[] = [
    "-nodefaults",
    "-no-user-config",
    "-display",
    "none",
    "-name",
    `stack-emulator,debug-threads=on`,
  ];
  // Always a named backend, a file or anonymous memory: a state saved from one loads into the other.
  const backend = memoryBackend({
    id: RAM_BACKEND_ID,
    sizeMiB: m.memoryMiB,
    ...(ram.kind === "file" ? { path: ram.path, share: ram.share } : { share: false }),
  });
  machineProps.push(backend.machineProperty);
  args.push(...backend.objectArgs);
  args.push("-machine", machineProps.join(","), "-accel", machine.accel, "-cpu", CPU_MODEL);
  args.push("-m", `${m.memoryMiB}M`, "-smp", String(m.cpus));
  args.push(...firmwareArgs(machine.firmware, paths));

  if (image.kernelPath) {
    args.push("-kernel", image.kernelPath);
    if (image.initrdPath) args.push("-initrd", image.initrdPath);
    if ("append" in m.boot && m.boot.append) args.push("-append", m.boot.append);
  }
  // A kernel boot's loader takes boot index 0; an image that boots from its disk gives it to the disk.
  const bootFromDisk = image.kernelPath ? "" : ",bootindex=0";
  const hostfwd = services.map((s) => `hostfwd=tcp:127.0.0.1:${s.hostPort}-:${s.guestPort}`).join(",");
  // q35 and virt both name their root bus pcie.0.
  const pci = (slot: number) => `,bus=pcie.0,addr=0x${slot.toString(16)}`;
  args.push(
    "-drive",
    `file=${opt(spec.disk)},if=none,id=disk0,format=qcow2,discard=unmap`,
    "-device",
    `virtio-blk-pci,drive=disk0,id=vdisk0${bootFromDisk}${pci(3)}`,
    "-drive",
    `file=${opt(paths.configIso)},if=none,id=cfg0,format=raw,readonly=on`,
    "-device",
    `virtio-blk-pci,drive=cfg0,id=vcfg0${pci(4)}`,
    "-netdev",
    `user,id=${NETDEV_ID}${hostfwd ? `,${hostfwd}` : ""}`,
    "-device",
    `virtio-net-pci,netdev=${NETDEV_ID},id=nic0,mac=52:54:00:12:34:56${pci(2)}`,
    "-chardev",
    `socket,id=qga0,path=${opt(paths.qgaSocket)},server=on,wait=off`,
    "-device",
    `virtio-serial-pci,id=vser0${pci(5)}`,
    "-device",
    "virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0",
    // vmgenid is an ACPI device of the PC machines only; an arm64 guest reseeds from virtio-rng instead.
    ...(machine.arch === "amd64" ? ["-device", "vmgenid,id=vmgenid0,guid=auto"] : []),
    "-device",
    `virtio-rng-pci,id=rng0${pci(6)}`,
    // Reserved for the config-file share: PCIe slots on the root bus cannot be hot-plugged, a root port's can. The
    // -fsdev is host-side only (not migrated), always there so that a device_add can name it.
    "-device",
    `pcie-root-port,id=${SHARE.rootPortId},chassis=1${pci(8)}`,
    "-fsdev",
    `local,id=${SHARE.fsdevId},path=${opt(paths.shareDir)},security_model=none`,
    ...(spec.shareDevice
      ? [
          "-device",
          Object.entries(SHARE_DEVICE)
            .map(([k, v]) => (k === "driver" ? v : `${k}=${v}`))
            .join(","),
        ]
      : []),
    "-qmp",
    `unix:${opt(paths.qmpSocket)},server=on,wait=off`,
    "-chardev",
    `file,id=serial0,path=${opt(paths.serialLog)},append=on`,
    "-serial",
    "chardev:serial0",
    "-pidfile",
    paths.pidFile,
    "-daemonize",
  );
  // -S keeps a restored VM paused until we say `cont`, instead of running the moment the state is loaded.
  if (spec.incoming) args.push("-S", "-incoming", "defer");
  return args;
}
