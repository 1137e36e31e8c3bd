export type HostDetectErrorCode =
  | "UNSUPPORTED_ARCH"
  | "QEMU_NOT_FOUND"
  | "QEMU_OVERRIDE_INVALID"
  | "QEMU_NOT_RUNNABLE"
  | "BAD_VERSION"
  | "PROBE_TIMEOUT"
  | "PROBE_FAILED"
  | "ACCEL_OVERRIDE_INVALID"
  | "ACCEL_UNUSABLE"
  | "NO_ACCELERATOR";

export class HostDetectError extends Error {
  readonly code: HostDetectErrorCode;
  /** The binary or file the error is about, when there is one. */
  readonly path?: string;

  constructor(code: HostDetectErrorCode, message: string, opts?: { path?: string; cause?: unknown }) {
    super(message, opts?.cause === undefined ? undefined : { cause: opts.cause });
    this.name = "HostDetectError";
    this.code = code;
    if (opts?.path !== undefined) this.path = opts.path;
  }
}
