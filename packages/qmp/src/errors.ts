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

export interface QmpErrorOptions {
  /** QEMU's error class (`GenericError`, `CommandNotFound`, ...) when QEMU itself answered with an error. */
  errorClass?: string;
  /** QEMU's own description, unchanged, when QEMU answered with an error or reported a migration failure. */
  desc?: string;
  /** The QMP command this error belongs to, if any. */
  command?: string;
  cause?: unknown;
}

export class QmpError extends Error {
  override readonly name = "QmpError";
  readonly code: QmpErrorCode;
  readonly errorClass?: string;
  readonly desc?: string;
  readonly command?: string;

  constructor(code: QmpErrorCode, message: string, options: QmpErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    if (options.errorClass !== undefined) this.errorClass = options.errorClass;
    if (options.desc !== undefined) this.desc = options.desc;
    if (options.command !== undefined) this.command = options.command;
  }
}
