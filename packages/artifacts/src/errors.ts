export type ArtifactsErrorCode =
  | "MISSING_TOKEN"
  | "BAD_TOKEN"
  | "NOT_FOUND"
  | "HTTP_ERROR"
  | "RATE_LIMITED"
  | "NETWORK"
  | "STALLED"
  | "ABORTED"
  | "NO_RELEASE"
  | "NO_ASSET"
  | "NO_SUCCESSFUL_RUN"
  | "NO_ARTIFACT"
  | "ARTIFACT_EXPIRED"
  | "CHECKSUM_MISMATCH"
  | "NO_SPACE"
  | "IO"
  | "DECOMPRESS_FAILED"
  | "ZSTD_UNAVAILABLE"
  | "UNSAFE_ZIP"
  | "ZIP_FAILED"
  | "INVALID_ARGUMENT";

export interface ArtifactsErrorOptions {
  /** HTTP status of the answer that caused the error, when there was one. */
  status?: number;
  /** The URL involved, without its query string (signed storage URLs carry credentials there). */
  url?: string;
  cause?: unknown;
}

export class ArtifactsError extends Error {
  override readonly name = "ArtifactsError";
  readonly code: ArtifactsErrorCode;
  readonly status?: number;
  readonly url?: string;

  constructor(code: ArtifactsErrorCode, message: string, options: ArtifactsErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    if (options.status !== undefined) this.status = options.status;
    if (options.url !== undefined) this.url = options.url;
  }
}

/** A URL safe to print: signed object-storage URLs carry their credentials in the query string. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    u.username = "";
    u.password = "";
    u.search = "";
    u.hash = "";
    return u.toString();
  } catch {
    return "<invalid url>";
  }
}

/** File-system failures are never retried; ENOSPC gets its own code because the fix differs. */
export function ioError(err: unknown, what: string): ArtifactsError {
  if (err instanceof ArtifactsError) return err;
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === "ENOSPC" || code === "EDQUOT") {
    return new ArtifactsError(
      "NO_SPACE",
      `No space left on the device while ${what}; free some space and retry.`,
      {
        cause: err,
      },
    );
  }
  const detail = err instanceof Error ? err.message : String(err);
  return new ArtifactsError("IO", `File-system error while ${what}: ${detail}`, { cause: err });
}
