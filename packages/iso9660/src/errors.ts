export type IsoErrorCode =
  | "INVALID_PATH"
  | "INVALID_NAME"
  | "DUPLICATE_PATH"
  | "NOT_A_DIRECTORY"
  | "INVALID_VOLUME_ID"
  | "INVALID_OPTION"
  | "SIZE_REQUIRED"
  | "SIZE_MISMATCH"
  | "FILE_TOO_LARGE"
  | "TOO_DEEP"
  | "TOO_MANY_DIRECTORIES"
  | "SOURCE_NOT_FOUND"
  | "UNSUPPORTED_FILE_TYPE"
  | "READ_FAILED"
  | "WRITE_FAILED";

/** Every failure of this package: `code` says what went wrong, `path` names the offending entry or file. */
export class IsoError extends Error {
  override readonly name = "IsoError";
  readonly code: IsoErrorCode;
  readonly path?: string;

  constructor(code: IsoErrorCode, message: string, options?: { path?: string; cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    if (options?.path !== undefined) this.path = options.path;
  }
}
