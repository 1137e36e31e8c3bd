/** Every code the CLI reports; scripts may rely on them (`--json` prints `{ error: { code, message, hint? } }`). */
export type EmulatorErrorCode =
  // What the user asked for
  | "INVALID_ARGUMENT"
  | "INVALID_NAME"
  | "INVALID_PORT"
  | "PORT_CONFLICT"
  | "PORT_IN_USE"
  | "UNKNOWN_IMAGE"
  | "NO_IMAGE"
  | "IMAGE_NOT_FOUND"
  | "INVALID_IMAGE"
  | "UNSUPPORTED_ARCH"
  | "CONFIG_FILE_NOT_FOUND"
  | "COMMAND_NOT_FOUND"
  // The instance's state
  | "NOT_RUNNING"
  | "NO_KEYS"
  | "BUSY"
  | "RUNNING"
  | "INSTANCE_HAS_DATA"
  | "SOCKET_DIR_NOT_OURS"
  | "SNAPSHOT_INVALID"
  // The host
  | "FIRMWARE_MISSING"
  | "QEMU_IMG_MISSING"
  | "QEMU_NOT_RUNNABLE"
  | "QEMU_EXITED"
  | "ACCEL_UNUSABLE"
  | "DISK_FAILED"
  | "CONFIG_TOO_LARGE"
  | "DEV_IMAGE_BUILD_FAILED"
  | "DEV_IMAGE_UNAVAILABLE"
  // The guest
  | "ACCEL_FAILED"
  | "NO_BACKEND"
  | "BACKEND_UNREACHABLE"
  | "PROJECT_FAILED"
  | "SHARE_FAILED"
  | "GUEST_COMMAND_FAILED"
  | "UNHEALTHY"
  | "STOP_FAILED";

/** Every failure the CLI reports: a stable `code` for scripts and a `hint` that says what to do next. */
export class EmulatorError extends Error {
  override readonly name = "EmulatorError";
  constructor(
    readonly code: EmulatorErrorCode,
    message: string,
    readonly hint?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export function isEmulatorError(error: unknown, code: EmulatorErrorCode): error is EmulatorError {
  return error instanceof EmulatorError && error.code === code;
}

/** 75 (EX_TEMPFAIL) tells a script that trying again later may work; everything else is 1. */
export function exitCodeFor(error: unknown): number {
  return isEmulatorError(error, "BUSY") ? 75 : 1;
}

export function describeError(error: unknown): { code: string; message: string; hint?: string } {
  if (error instanceof EmulatorError) {
    return { code: error.code, message: error.message, ...(error.hint ? { hint: error.hint } : {}) };
  }
  if (error instanceof Error) {
    const { code } = error as { code?: unknown };
    return { code: typeof code === "string" ? code : "ERROR", message: error.message };
  }
  return { code: "ERROR", message: String(error) };
}
