import { spawn } from "node:child_process";
import { constants } from "node:os";
import { EmulatorError } from "../core/errors.js";

/** The command `run` starts: one string for /bin/sh -c, or a program and its arguments run without a shell. */
export type ChildCommand = { shell: string } | { file: string; args: string[] };

/**
 * `run "<shell string>"` runs one operand through the shell; `run -- cmd args...` (a `--` before the command) or
 * several operands run the program directly, so arguments reach it exactly as given.
 */
export function childCommand(operands: string[], dashDash: boolean): ChildCommand {
  const [first, ...rest] = operands;
  if (first === undefined) {
    throw new EmulatorError(
      "INVALID_ARGUMENT",
      "run needs a command",
      'give a shell string (stack-emulator run "npm run dev") or a program after -- (stack-emulator run -- npm run dev)',
    );
  }
  if (!dashDash && rest.length === 0) return { shell: first };
  return { file: first, args: rest };
}

/** Signals `run` passes on: the child decides how to end, and `run` exits as the child did. */
const FORWARDED_SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP"] as const;

/**
 * Runs the child with `env` (stdio shared with this process) and resolves with the exit status a shell would report:
 * its code, or 128 + the signal's number when a signal ended it.
 */
export function runChild(command: ChildCommand, env: NodeJS.ProcessEnv): Promise<number> {
  const [file, args] = "shell" in command ? ["/bin/sh", ["-c", command.shell]] : [command.file, command.args];
  return new Promise((resolvePromise, reject) => {
    const child = spawn(file, args, { env, stdio: "inherit" });
    // Installed for the child's lifetime, so a signal to `run` never ends it before the child (and the emulator
    // started for it) is dealt with.
    const forward = (signal: NodeJS.Signals) => {
      child.kill(signal);
    };
    for (const signal of FORWARDED_SIGNALS) process.on(signal, forward);
    const cleanUp = () => {
      for (const signal of FORWARDED_SIGNALS) process.off(signal, forward);
    };
    child.once("error", (error: NodeJS.ErrnoException) => {
      cleanUp();
      reject(
        new EmulatorError(
          "COMMAND_NOT_FOUND",
          `could not run ${file}: ${error.message}`,
          error.code === "ENOENT"
            ? "check the program's name and PATH, or pass a shell string in quotes to run it through /bin/sh"
            : "check that the program exists and is executable",
        ),
      );
    });
    child.once("exit", (code, signal) => {
      cleanUp();
      resolvePromise(code ?? 128 + (signal ? (constants.signals[signal] ?? 0) : 0));
    });
  });
}

/**
 * Runs `fn` (stopping the emulator after the child) with SIGINT and SIGTERM caught: a second Ctrl-C must not end
 * `run` halfway through saving the emulator's state.
 */
export async function shieldedFromSignals<T>(fn: () => Promise<T>, onSignal: () => void): Promise<T> {
  for (const signal of FORWARDED_SIGNALS) process.on(signal, onSignal);
  try {
    return await fn();
  } finally {
    for (const signal of FORWARDED_SIGNALS) process.off(signal, onSignal);
  }
}
