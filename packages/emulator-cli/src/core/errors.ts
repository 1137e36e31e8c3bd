/** Every code the CLI reports; scripts may rely on them (`--json` prints `{ error: { code, message, hint? } }`). */
export const ERROR_CODES = [
  // What the user asked for
  "INVALID_ARGUMENT",
  "INVALID_NAME",
  "INVALID_PORT",
  "PORT_CONFLICT",
  "PORT_IN_USE",
  "UNKNOWN_IMAGE",
  "NO_IMAGE",
  "IMAGE_NOT_FOUND",
  "INVALID_IMAGE",
  "UNSUPPORTED_ARCH",
  "CONFIG_FILE_NOT_FOUND",
  "COMMAND_NOT_FOUND",
  // The instance's state
  "NOT_RUNNING",
  "NO_KEYS",
  "BUSY",
  "RUNNING",
  "INSTANCE_HAS_DATA",
  "SOCKET_DIR_NOT_OURS",
  "SNAPSHOT_INVALID",
  // The host
  "FIRMWARE_MISSING",
  "QEMU_IMG_MISSING",
  "QEMU_NOT_RUNNABLE",
  "QEMU_EXITED",
  "ACCEL_UNUSABLE",
  "DISK_FAILED",
  "NO_SPACE",
  "CONFIG_TOO_LARGE",
  "DEV_IMAGE_BUILD_FAILED",
  "DEV_IMAGE_UNAVAILABLE",
  "ZSTD_UNAVAILABLE",
  // The guest
  "ACCEL_FAILED",
  "AGENT_TIMEOUT",
  "NO_BACKEND",
  "BACKEND_UNREACHABLE",
  "PROJECT_FAILED",
  "SHARE_FAILED",
  "GUEST_COMMAND_FAILED",
  "UNHEALTHY",
  "STOP_FAILED",
  "INTERRUPTED",
  // Anything else: a failure this CLI did not foresee; its message names the cause.
  "INTERNAL",
] as const;

export type EmulatorErrorCode = (typeof ERROR_CODES)[number];

/**
 * Codes of the libraries' errors that reach the user as they are, documented with the CLI's own: what a download
 * (@stack/artifacts) or the host's QEMU (@stack/host-detect) can run into and the user can act on. A library's
 * other codes are reported as its `otherwise` code. Matched by the error's name: @stack/artifacts is loaded only by
 * the commands that download.
 */
export const LIBRARY_ERROR_CODES = {
  ArtifactsError: {
    codes: [
      "MISSING_TOKEN",
      "BAD_TOKEN",
      "RATE_LIMITED",
      "NETWORK",
      "STALLED",
      "NO_RELEASE",
      "NO_ASSET",
      "NO_SUCCESSFUL_RUN",
      "NO_ARTIFACT",
      "ARTIFACT_EXPIRED",
      "CHECKSUM_MISMATCH",
      "NO_SPACE",
      "UNSAFE_ZIP",
    ],
    otherwise: "DOWNLOAD_FAILED",
  },
  HostDetectError: {
    codes: [
      "QEMU_NOT_FOUND",
      "QEMU_OVERRIDE_INVALID",
      "QEMU_NOT_RUNNABLE",
      "BAD_VERSION",
      "UNSUPPORTED_ARCH",
      "ACCEL_OVERRIDE_INVALID",
      "ACCEL_UNUSABLE",
      "NO_ACCELERATOR",
    ],
    otherwise: "HOST_CHECK_FAILED",
  },
} as const satisfies Record<string, { codes: readonly string[]; otherwise: string }>;

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

/**
 * An error as the CLI reports it (`--json`: `{error: {code, message, hint?}}`): only the documented codes, this
 * module's ERROR_CODES and LIBRARY_ERROR_CODES, and a full disk met anywhere as NO_SPACE; anything else is INTERNAL,
 * with the cause in the message.
 */
export function describeError(error: unknown): { code: string; message: string; hint?: string } {
  if (error instanceof EmulatorError) {
    return { code: error.code, message: error.message, ...(error.hint ? { hint: error.hint } : {}) };
  }
  if (error instanceof Error) {
    const { code } = error as { code?: unknown };
    const library = Object.hasOwn(LIBRARY_ERROR_CODES, error.name)
      ? LIBRARY_ERROR_CODES[error.name as keyof typeof LIBRARY_ERROR_CODES]
      : undefined;
    if (library && typeof code === "string") {
      const known = (library.codes as readonly string[]).includes(code);
      return { code: known ? code : library.otherwise, message: error.message };
    }
    if (code === "ENOSPC" || code === "EDQUOT") {
      return {
        code: "NO_SPACE",
        message: error.message,
        hint: "free space on the disk of the emulator's home (STACK_EMULATOR_HOME), then run the command again",
      };
    }
    return {
      code: "INTERNAL",
      message: `${error.name}${typeof code === "string" ? ` ${code}` : ""}: ${error.message}`,
    };
  }
  return { code: "INTERNAL", message: String(error) };
}
