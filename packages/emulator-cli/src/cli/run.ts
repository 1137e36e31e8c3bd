import { CommanderError } from "commander";
import { describeError, exitCodeFor } from "../core/errors.js";
import type { Io } from "./io.js";
import { createProgram } from "./program.js";

/**
 * Runs one command line (`argv` as process.argv: node, script, arguments) against `io` and returns its exit status.
 * The bin calls it with the process's own streams; tests call it in-process.
 */
export async function run(argv: readonly string[], io: Omit<Io, "exitCode" | "argv">): Promise<number> {
  // pnpm forwards a literal "--" from `pnpm start -- --help`; it is dropped so the flags after it still parse. After
  // `run` it is the user's: it says the command runs without a shell.
  const args = argv.filter((arg, index) => !(arg === "--" && index === 3 && argv[2] !== "run"));
  const state: Io = { ...io, argv: args, exitCode: 0 };
  try {
    await createProgram(state).parseAsync(args);
    return state.exitCode;
  } catch (error) {
    // --help, --version and commander's own usage errors have been printed already.
    if (error instanceof CommanderError) return error.exitCode;
    const { code, message, hint } = describeError(error);
    if (args.includes("--json")) {
      io.stdout.write(
        `${JSON.stringify({ error: { code, message, ...(hint ? { hint } : {}) } }, null, 2)}\n`,
      );
    }
    io.stderr.write(`error: ${message}\n${hint ? `  ${hint}\n` : ""}`);
    return exitCodeFor(error);
  }
}
