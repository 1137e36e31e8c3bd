export { QmpClient } from "./client.js";
export { QmpError, type QmpErrorCode, type QmpErrorOptions } from "./errors.js";
export {
  type MemoryBackendOptions,
  type MemoryBackendParts,
  memoryBackend,
  memoryBackendArgs,
} from "./memory.js";
export type { WireLog } from "./protocol/redact.js";
export {
  bestSaveMethod,
  chooseSaveMethod,
  readsStateByPath,
  type SaveMethod,
  type SaveMethodInputs,
} from "./save-method.js";
export type {
  ConnectOptions,
  ExecuteOptions,
  QemuVersionTriple,
  QmpEvent,
  QmpGreeting,
  StatusInfo,
  WaitForEventOptions,
} from "./types.js";
export {
  type RestoreOptions,
  restoreVmState,
  type SaveOptions,
  type SaveProgress,
  type SaveResult,
  saveVmState,
} from "./vmstate.js";
