export interface ErrorDetails {
  /** The command this error belongs to, if any. */
  command?: string | undefined;
  /** The server's error class (`GenericError`, `CommandNotFound`, ...) when the server answered with an error. */
  errorClass?: string | undefined;
  /** The server's own description, unchanged. */
  desc?: string | undefined;
  cause?: unknown;
}

/** What QmpError and QgaError share: a code from the client's closed set, and what the server said. */
export class ProtocolError<Code extends string> extends Error {
  readonly code: Code;
  readonly command?: string;
  readonly errorClass?: string;
  readonly desc?: string;

  constructor(code: Code, message: string, details: ErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.code = code;
    if (details.command !== undefined) this.command = details.command;
    if (details.errorClass !== undefined) this.errorClass = details.errorClass;
    if (details.desc !== undefined) this.desc = details.desc;
  }
}
