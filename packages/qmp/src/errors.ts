import { type ErrorDetails, ProtocolError } from "./protocol/error.js";

export type QmpErrorCode =
  | "CONNECT_TIMEOUT"
  | "CONNECT_FAILED"
  | "CLOSED"
  | "TIMEOUT"
  | "ABORTED"
  | "COMMAND_FAILED"
  | "PROTOCOL"
  | "MIGRATION_FAILED"
  | "UNSUPPORTED";

/** `errorClass` and `desc` are QEMU's when QEMU answered with an error or reported a migration failure. */
export type QmpErrorOptions = ErrorDetails;

export class QmpError extends ProtocolError<QmpErrorCode> {
  override readonly name = "QmpError";
}
