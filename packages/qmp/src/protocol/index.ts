/**
 * `@stack/qmp/protocol`: the layer under both QEMU clients (QmpClient here, QgaClient in `@stack/qga`), as
 * qemu.qmp's `protocol.py` is under its QMPClient: a unix socket connected with retry, newline-delimited JSON
 * framing with a bounded line, an explicit run state with a `closed` promise carrying the reason, message
 * dispatch to the client, and a wire log with secrets redacted.
 */
export { Channel, type ChannelOptions, type Runstate } from "./channel.js";
export { ConnectError, type ConnectFailure } from "./connect.js";
export { type ErrorDetails, ProtocolError } from "./error.js";
export { type Decoder, encodeJson, type Frame, LineDecoder } from "./framing.js";
export type { WireLog } from "./redact.js";
