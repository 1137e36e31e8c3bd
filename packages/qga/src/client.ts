import { setTimeout as sleep } from "node:timers/promises";
import { QgaError } from "./errors.js";
import { QgaSession, type SessionOptions } from "./session.js";

export interface ConnectOptions extends SessionOptions {
  /** Deadline for the socket to appear and the agent to answer the first resync. Default 10 s. */
  timeoutMs?: number;
  /** Default deadline of ping/info/setTime/execute calls. Default 10 s. */
  commandTimeoutMs?: number;
  /** Default deadline of exec calls, from the start of the process until its status says it exited. Default 60 s. */
  execTimeoutMs?: number;
}

export interface CommandOptions {
  timeoutMs?: number;
}

export interface AgentInfo {
  version: string;
  supported_command: { name: string; enabled: boolean; "success-response"?: boolean }[];
}

export interface ExecRequest {
  path: string;
  args?: string[];
  /** `KEY=value` strings; when given they replace the whole environment (PATH included). */
  env?: string[];
  /** Sent base64-encoded in the command itself; never logged. */
  stdin?: Buffer | string;
  /** Collect stdout and stderr (up to 16 MiB each in the agent). Default true. */
  captureOutput?: boolean;
}

export interface ExecResult {
  exitCode?: number;
  signal?: number;
  stdout: Buffer;
  stderr: Buffer;
  stdoutTruncated: boolean;
  stderrTruncated: boolean;
}

interface ExecStatus {
  exited: boolean;
  exitcode?: number;
  signal?: number;
  "out-data"?: string;
  "err-data"?: string;
  "out-truncated"?: boolean;
  "err-truncated"?: boolean;
}

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
const FIRST_POLL_MS = 1;
/** A status poll costs the agent well under a millisecond; a longer cap would add its own length to short commands. */
const MAX_POLL_MS = 20;

/** A client for the QEMU guest agent (qemu-ga) over a unix socket, such as QEMU's virtio-serial chardev. */
export class QgaClient {
  readonly #session: QgaSession;
  readonly #commandTimeoutMs: number;
  readonly #execTimeoutMs: number;
  #info: Promise<AgentInfo> | undefined;

  private constructor(session: QgaSession, opts: ConnectOptions) {
    this.#session = session;
    this.#commandTimeoutMs = opts.commandTimeoutMs ?? 10_000;
    this.#execTimeoutMs = opts.execTimeoutMs ?? 60_000;
  }

  /** Connects, waiting for the socket to appear, and resynchronises the channel before resolving. */
  static async connect(socketPath: string, opts: ConnectOptions = {}): Promise<QgaClient> {
    const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
    return new QgaClient(await QgaSession.open(socketPath, deadline, opts), opts);
  }

  /** Runs any agent command and resolves with its `return` value. */
  execute<T = unknown>(command: string, args?: object, opts: CommandOptions = {}): Promise<T> {
    return this.#session.execute(command, args, this.#deadline(opts)) as Promise<T>;
  }

  async ping(opts: CommandOptions = {}): Promise<void> {
    await this.execute("guest-ping", undefined, opts);
  }

  /** The agent's version and commands. (The agent calls the list `supported_commands`.) */
  async info(opts: CommandOptions = {}): Promise<AgentInfo> {
    const reply = await this.execute<{ version: string; supported_commands: AgentInfo["supported_command"] }>(
      "guest-info",
      undefined,
      opts,
    );
    return { version: reply.version, supported_command: reply.supported_commands };
  }

  /** Whether the agent has `command` and has it enabled; asks `guest-info` once per client. */
  async supports(command: string): Promise<boolean> {
    if (!this.#info) {
      const pending = this.info();
      this.#info = pending;
      // A failed lookup is not cached: the next call asks again.
      pending.catch(() => {
        if (this.#info === pending) this.#info = undefined;
      });
    }
    const info = await this.#info;
    return info.supported_command.some((c) => c.name === command && c.enabled);
  }

  /**
   * Sets the guest clock to `time` (a Date, or nanoseconds since the epoch) and the guest's RTC from it; without
   * `time`, sets the guest clock from its RTC. The agent refuses times outside 1970-2069.
   */
  async setTime(time?: Date | bigint, opts: CommandOptions = {}): Promise<void> {
    await this.execute(
      "guest-set-time",
      time === undefined ? undefined : { time: toNanoseconds(time) },
      opts,
    );
  }

  /**
   * Starts a process in the guest and waits for it to exit. A deadline only stops the waiting: qemu-ga 7.2 has no
   * way to kill the process.
   */
  async exec(req: ExecRequest, opts: CommandOptions = {}): Promise<ExecResult> {
    const deadline = Date.now() + (opts.timeoutMs ?? this.#execTimeoutMs);
    const pid = await this.spawn(req, { timeoutMs: deadline - Date.now() });
    return this.#waitForExit(pid, req.path, deadline);
  }

  /**
   * Starts a process in the guest and resolves with its guest pid as soon as it runs, so other commands can go
   * to the agent meanwhile; `waitForExit` collects the result. The agent feeds `stdin` to the process from its
   * main loop, between the commands it serves.
   */
  async spawn(req: ExecRequest, opts: CommandOptions = {}): Promise<number> {
    const started = await this.#session.execute(
      "guest-exec",
      {
        path: req.path,
        arg: req.args,
        env: req.env,
        "input-data": req.stdin === undefined ? undefined : Buffer.from(req.stdin).toString("base64"),
        // qemu-ga 7.2 accepts only the boolean form; the string modes came with 8.0.
        "capture-output": req.captureOutput ?? true,
      },
      this.#deadline(opts),
    );
    const pid = (started as { pid?: unknown } | undefined)?.pid;
    if (typeof pid !== "number") {
      throw new QgaError("COMMAND_FAILED", `guest-exec returned no pid: ${JSON.stringify(started)}`, {
        command: "guest-exec",
      });
    }
    return pid;
  }

  /**
   * Waits for a process started by `spawn` to exit and returns its result. The agent reports an exit only once:
   * wait for each pid once. A deadline only stops the waiting.
   */
  waitForExit(pid: number, opts: CommandOptions = {}): Promise<ExecResult> {
    return this.#waitForExit(pid, "the process", Date.now() + (opts.timeoutMs ?? this.#execTimeoutMs));
  }

  async #waitForExit(pid: number, what: string, deadline: number): Promise<ExecResult> {
    const stillRunning = (cause?: unknown) =>
      new QgaError(
        "TIMEOUT",
        `${what} (guest pid ${pid}) did not exit in time and may still be running in the guest: ` +
          "pass a larger timeoutMs",
        { command: "guest-exec", cause },
      );
    let delay = FIRST_POLL_MS;
    for (;;) {
      let status: ExecStatus;
      try {
        // The agent forgets a process the first time it reports it exited, so this first result is the only one.
        status = (await this.#session.execute("guest-exec-status", { pid }, deadline)) as ExecStatus;
      } catch (error) {
        throw error instanceof QgaError && error.code === "TIMEOUT" ? stillRunning(error) : error;
      }
      if (status.exited) return execResult(status);
      if (Date.now() + delay >= deadline) throw stillRunning();
      await sleep(delay);
      delay = Math.min(delay * 2, MAX_POLL_MS);
    }
  }

  close(): Promise<void> {
    return this.#session.close();
  }

  #deadline(opts: CommandOptions): number {
    return Date.now() + (opts.timeoutMs ?? this.#commandTimeoutMs);
  }
}

function toNanoseconds(time: Date | bigint): bigint {
  if (time instanceof Date) {
    const ms = time.getTime();
    if (Number.isNaN(ms)) throw new RangeError("setTime got an invalid Date");
    return BigInt(ms) * 1_000_000n;
  }
  if (time < INT64_MIN || time > INT64_MAX) {
    throw new RangeError(`setTime takes nanoseconds since the epoch as a signed 64-bit integer, got ${time}`);
  }
  return time;
}

function execResult(status: ExecStatus): ExecResult {
  const result: ExecResult = {
    stdout: Buffer.from(status["out-data"] ?? "", "base64"),
    stderr: Buffer.from(status["err-data"] ?? "", "base64"),
    stdoutTruncated: status["out-truncated"] === true,
    stderrTruncated: status["err-truncated"] === true,
  };
  if (typeof status.exitcode === "number") result.exitCode = status.exitcode;
  if (typeof status.signal === "number") result.signal = status.signal;
  return result;
}
