import type { Command } from "commander";
import { createReporter, type Reporter } from "../core/report.js";
import type { Settings } from "../core/settings.js";
import { Instance } from "../instance/instance.js";
import { buildSettings, type SettingsFlags } from "./settings.js";

/** Where a CLI run reads and writes: the process's own streams for the bin, others in a test. */
export interface Io {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WriteStream;
  stdin: NodeJS.ReadStream;
  env: NodeJS.ProcessEnv;
  /** The process's argument list, for the one thing commander does not keep: whether `run` saw a `--`. */
  argv: readonly string[];
  exitCode: number;
}

export function printJson(io: Io, data: unknown): void {
  io.stdout.write(`${JSON.stringify(data, null, 2)}\n`);
}

/** A command's result: JSON with --json, else the text `human` makes. */
export function output(io: Io, json: boolean, data: unknown, human: () => string): void {
  if (json) printJson(io, data);
  else io.stdout.write(`${human()}\n`);
}

/** What an action works with: its settings (flags over the environment), progress output, and the instance. */
export interface Invocation {
  settings: Settings;
  report: Reporter;
  json: boolean;
  instance: Instance;
}

/** The invocation of `command`: the global flags and its own, read into settings once. */
export function invocation(io: Io, command: Command, flags: SettingsFlags = {}): Invocation {
  const globals = command.optsWithGlobals<{ json?: boolean; instance?: string }>();
  const json = Boolean(globals.json);
  const report = createReporter({
    stream: io.stderr,
    quiet: json && !io.stderr.isTTY,
    redraw: !io.env.CI,
    trace: io.env.STACK_EMULATOR_TRACE === "1",
    ...(io.env.STACK_EMULATOR_KILL_AT ? { killAt: io.env.STACK_EMULATOR_KILL_AT } : {}),
  });
  report.mark("command line parsed");
  const settings = buildSettings(
    { ...flags, ...(globals.instance ? { instance: globals.instance } : {}) },
    io.env,
  );
  return { settings, report, json, instance: new Instance(settings, report) };
}
