import { appendFileSync } from "node:fs";

/** Progress for humans on stderr (redrawn on a TTY, plain lines otherwise) plus a plain log file. */
export interface Reporter {
  step(message: string): void;
  info(message: string): void;
  warn(message: string): void;
  /** A timing mark: in the log file always, on stderr with STACK_EMULATOR_TRACE=1. */
  mark(label: string): void;
  /** Also write future lines to this log file. */
  logTo(path: string): void;
  /**
   * Where a progress display that draws itself (a download's) writes; undefined when quiet. On a terminal its
   * open line takes the step line's place, and messages printed meanwhile go above it.
   */
  progressOutput(): ProgressOutput | undefined;
  done(): void;
}

/** A line-drawing progress display's view of the reporter's stream (what @stack/artifacts' renderer takes). */
export interface ProgressOutput {
  readonly isTTY: boolean;
  readonly columns: number | undefined;
  write(text: string): void;
}

export interface ReporterOptions {
  stream?: NodeJS.WriteStream;
  quiet?: boolean;
  /** Redraw progress in place (a terminal that is not a CI log). */
  redraw?: boolean;
  /** Timing marks on the stream too (STACK_EMULATOR_TRACE=1). */
  trace?: boolean;
  /**
   * Fault injection (STACK_EMULATOR_KILL_AT=<mark>): the process kills itself with SIGKILL at the first mark of this
   * label, as a kill -9 at exactly that step would. The fault tests use it; no handler can run.
   */
  killAt?: string;
}

export function createReporter(options: ReporterOptions = {}): Reporter {
  const stream = options.stream ?? process.stderr;
  const tty = Boolean(stream.isTTY) && options.redraw !== false;
  const started = Date.now();
  const trace = Boolean(options.trace);

  let logFile: string | undefined;
  let current: string | undefined;
  /** What a progress display has drawn on the open line; it replaces the step line until it ends the line. */
  let bar: string | undefined;
  let timer: NodeJS.Timeout | undefined;
  const elapsed = () => `${((Date.now() - started) / 1000).toFixed(1)}s`;
  const log = (level: string, message: string) => {
    if (!logFile) return;
    try {
      // Owner-only, like every file of the instance: the log names its paths and what went wrong.
      appendFileSync(logFile, `${new Date().toISOString()} ${level} ${message}\n`, { mode: 0o600 });
    } catch {
      // The log is a convenience; the terminal output already carries the message.
    }
  };
  const clearLine = () => {
    if (tty && (current || bar !== undefined)) stream.write("\r\x1b[2K");
  };
  const redraw = () => {
    if (!tty) return;
    if (bar !== undefined) stream.write(`\r\x1b[2K${bar}`);
    else if (current) stream.write(`\r\x1b[2K\x1b[36m…\x1b[0m ${current} \x1b[2m${elapsed()}\x1b[0m`);
  };
  const progressOutput: ProgressOutput = {
    isTTY: tty,
    get columns() {
      return stream.columns;
    },
    write(text) {
      if (!tty) {
        stream.write(text);
        return;
      }
      const body = text.replace(/^\r/, "").replace(/\n$/, "");
      const ends = text.endsWith("\n");
      // A bare newline ends the line as drawn (a failed transfer's last state stays in view).
      stream.write(body === "" && bar !== undefined ? "\n" : `\r\x1b[2K${body}${ends ? "\n" : ""}`);
      bar = ends ? undefined : body;
      if (ends) redraw();
    },
  };
  const print = (prefix: string, message: string) => {
    if (options.quiet && prefix !== "warning:") return;
    clearLine();
    stream.write(`${prefix ? `${prefix} ` : ""}${message}\n`);
    redraw();
  };
  return {
    step(message) {
      log("step", message);
      if (options.quiet) return;
      if (tty) {
        current = message;
        redraw();
        timer ??= setInterval(redraw, 100).unref();
      } else {
        stream.write(`[${elapsed()}] ${message}\n`);
      }
    },
    info(message) {
      log("info", message);
      print("", message);
    },
    warn(message) {
      log("warn", message);
      print("warning:", message);
    },
    mark(label) {
      // Since the process started, so that Node's own start-up and module loading show up too.
      const line = `${label} at ${Math.round(performance.now())} ms`;
      log("mark", line);
      if (trace) print("trace:", line);
      if (label === options.killAt) process.kill(process.pid, "SIGKILL");
    },
    logTo(path) {
      logFile = path;
    },
    progressOutput() {
      return options.quiet ? undefined : progressOutput;
    },
    done() {
      if (timer) clearInterval(timer);
      clearLine();
      current = undefined;
      bar = undefined;
    },
  };
}
