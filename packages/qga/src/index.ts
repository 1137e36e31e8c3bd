export {
  type AgentInfo,
  type CommandOptions,
  type ConnectOptions,
  type ExecRequest,
  type ExecResult,
  QgaClient,
} from "./client.js";
export { QgaError, type QgaErrorCode, type QgaErrorDetails } from "./errors.js";
export { encodeJson, type Frame, LineDecoder } from "./framing.js";
export { DEFAULT_MAX_LINE_BYTES, type WireLog } from "./session.js";
