export {
  ACCEL_ENV,
  ACCELERATOR_OS,
  type Accelerator,
  type AcceleratorChoice,
  type ChooseAcceleratorOptions,
  chooseAccelerator,
  type KvmDeviceStatus,
  kvmDeviceStatus,
} from "./accel.js";
export {
  type CheckStatus,
  type DoctorCheck,
  type DoctorOptions,
  type DoctorReport,
  doctor,
} from "./doctor.js";
export { HostDetectError, type HostDetectErrorCode } from "./errors.js";
export { type FindQemuOptions, findQemu, type QemuBinaries } from "./find-qemu.js";
export { type Firmware, type FirmwareOptions, findFirmware, listFirmware } from "./firmware.js";
export { type GuestArch, type HostInfo, type HostOs, hostInfo } from "./host.js";
export {
  detectPackageManager,
  installCommand,
  type Need,
  type PackageManager,
  packageNames,
} from "./packages.js";
export {
  type ProbeOptions,
  parseQemuVersion,
  probeQemu,
  type QemuAbilities,
  type QemuVersion,
  qemuVersion,
} from "./probe.js";
export {
  type AcceleratorProof,
  type ChooseProvenOptions,
  chooseProvenAccelerator,
  DEFAULT_PROOF_TIMEOUT_MS,
  type ProvenChoice,
  type ProveOptions,
  proveAccelerator,
} from "./prove.js";
