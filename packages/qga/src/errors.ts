export type QgaErrorCode = "AGENT_UNRESPONSIVE" | "COMMAND_FAILED" | "UNSUPPORTED" | "TIMEOUT" | "CLOSED";

export interface QgaErrorDetails {
  /** The agent command that failed, when there is one. */
  command?: string;
  /** The agent's error class (`GenericError`, `CommandNotFound`, ...) for errors the agent reported. */
  errorClass?: string;
  /** The agent's own description of the error. */
  desc?: string;
  cause?: unknown;
}

export class QgaError extends Error {
  override readonly name = "QgaError";
  readonly code: QgaErrorCode;
  readonly command?: string;
  readonly errorClass?: string;
  readonly desc?: string;

  constructor(code: QgaErrorCode, message: string, details: QgaErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.code = code;
    if (details.command !== undefined) this.command = details.command;
    if (details.errorClass !== undefined) this.errorClass = details.errorClass;
    if (details.desc !== undefined) this.desc = details.desc;
  }
}
