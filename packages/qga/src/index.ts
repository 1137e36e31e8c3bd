export {
  type AgentInfo,
  type CommandOptions,
  type ConnectOptions,
  type ExecRequest,
  type ExecResult,
  QgaClient,
} from "./client.js";
export { QgaError, type QgaErrorCode, type QgaErrorDetails } from "./errors.js";
export type { WireLog } from "./session.js";
