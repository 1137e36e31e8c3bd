export type { WireLog } from "@stack/qmp/protocol";
export {
  type AgentInfo,
  type CommandOptions,
  type ConnectOptions,
  type ExecRequest,
  type ExecResult,
  QgaClient,
} from "./client.js";
export { QgaError, type QgaErrorCode, type QgaErrorDetails } from "./errors.js";
