export { QmpClient } from "./client.js";
export { QmpError, type QmpErrorCode, type QmpErrorOptions } from "./errors.js";
export {
  type MemoryBackendOptions,
  type MemoryBackendParts,
  memoryBackend,
  memoryBackendArgs,
} from "./memory.js";
export type {
  ConnectOptions,
  ExecuteOptions,
  MigrationCapabilityStatus,
  MigrationInfo,
  QemuVersionTriple,
  QmpEvent,
  QmpGreeting,
  StatusInfo,
  VersionInfo,
  WaitForEventOptions,
  WireLog,
} from "./types.js";
export {
  bestSaveMethod,
  chooseSaveMethod,
  type RestoreOptions,
  readsStateByPath,
  restoreVmState,
  type SaveMethod,
  type SaveMethodInputs,
  type SaveOptions,
  type SaveProgress,
  type SaveResult,
  saveVmState,
} from "./vmstate.js";
