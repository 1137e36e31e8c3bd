/** Every failure the CLI reports: a stable `code` for scripts and a `hint` that says what to do next. */
export class EmulatorError extends Error {
  override readonly name = "EmulatorError";
  constructor(
    readonly code: string,
    message: string,
    readonly hint?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
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
