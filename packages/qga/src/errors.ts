import { type ErrorDetails, ProtocolError } from "@stack/qmp/protocol";

export type QgaErrorCode = "AGENT_UNRESPONSIVE" | "COMMAND_FAILED" | "UNSUPPORTED" | "TIMEOUT" | "CLOSED";

/** `errorClass` and `desc` are the agent's own, for errors the agent reported. */
export type QgaErrorDetails = ErrorDetails;

export class QgaError extends ProtocolError<QgaErrorCode> {
  override readonly name = "QgaError";
}
