import { QmpError } from "./errors.js";
import { EventHub } from "./events.js";
import { Channel } from "./protocol/channel.js";
import type { ConnectError } from "./protocol/connect.js";
import { guard } from "./protocol/deadline.js";
import { type Frame, LineDecoder } from "./protocol/framing.js";
import { errorOf, isObject, Requests } from "./requests.js";
import type {
  ConnectOptions,
  ExecuteOptions,
  QmpEvent,
  QmpGreeting,
  StatusInfo,
  WaitForEventOptions,
} from "./types.js";

const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
const DEFAULT_COMMAND_TIMEOUT_MS = 60_000;
/** QEMU's biggest regular reply (`query-qmp-schema`) is about 200 KiB; 16 MiB leaves room without trusting the peer. */
const DEFAULT_MAX_LINE_BYTES = 16 * 1024 * 1024;
/**
 * JSON that is not the greeting was seen once in CI as the first line from a freshly started QEMU 7.2 (cause
 * unknown). Waiting for the greeting costs nothing; a peer that keeps sending other things is refused.
 */
const MAX_LINES_BEFORE_GREETING = 16;

/**
 * A QMP client over one negotiated connection, as qemu.qmp's QMPClient over its protocol layer: commands carry ids
 * and may overlap, replies are matched by id, events go to subscribers, and an ended connection rejects everything
 * still waiting with its reason.
 */
export class QmpClient {
  /** Resolves (never rejects) with the reason once the connection is gone. */
  readonly closed: Promise<QmpError>;
  readonly #path: string;
  readonly #channel: Channel<QmpError>;
  readonly #commandTimeoutMs: number;
  readonly #maxLineBytes: number;
  readonly #requests = new Requests();
  readonly #events = new EventHub();
  #greeting: QmpGreeting | undefined;
  #linesBeforeGreeting = 0;
  #greeted: { resolve: () => void; reject: (error: QmpError) => void } | undefined;
  #nextId = 1;

  private constructor(path: string, opts: ConnectOptions) {
    this.#path = path;
    this.#commandTimeoutMs = opts.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
    this.#maxLineBytes = opts.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES;
    this.#channel = new Channel<QmpError>({
      decoder: new LineDecoder(this.#maxLineBytes),
      wireLog: opts.wireLog,
      onMessage: (message, frame) => this.#receive(message, frame),
      onClose: (reason) => this.#shutdown(reason),
      connectError: (error) => connectError(error),
      closedError: (cause) =>
        new QmpError(
          "CLOSED",
          `QMP connection to ${path} closed${cause ? ` (${cause.message})` : ""}: QEMU exited or closed the monitor`,
          { cause },
        ),
    });
    this.closed = this.#channel.closed;
  }

  /**
   * Waits for the unix socket to appear (until `timeoutMs`), reads the greeting and leaves capabilities
   * negotiation mode. QEMU serves one client per `-qmp` socket: a second client gets no greeting until the first
   * disconnects, which shows up here as CONNECT_TIMEOUT.
   */
  static async connect(socketPath: string, opts: ConnectOptions = {}): Promise<QmpClient> {
    const timeoutMs = opts.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    const deadline = Date.now() + timeoutMs;
    const client = new QmpClient(socketPath, opts);
    await client.#channel.connect(socketPath, { deadline, signal: opts.signal }, async () => {
      await client.#awaitGreeting(deadline, timeoutMs, opts.signal);
      try {
        await client.execute("qmp_capabilities", undefined, {
          timeoutMs: Math.max(1, deadline - Date.now()),
          signal: opts.signal,
        });
      } catch (error) {
        if (!(error instanceof QmpError && error.code === "TIMEOUT")) throw error;
        throw new QmpError(
          "CONNECT_TIMEOUT",
          `QMP negotiation on ${socketPath} did not finish in ${timeoutMs} ms`,
          {
            cause: error,
          },
        );
      }
    });
    return client;
  }

  /** The server's greeting: QEMU version and the capabilities it offered. */
  get greeting(): QmpGreeting {
    // Set before connect() resolves, and a client exists for its user only from then on.
    return this.#greeting as QmpGreeting;
  }

  /** True until the connection starts to close. */
  get isOpen(): boolean {
    return this.#channel.runstate === "running";
  }

  /**
   * Sends one command and resolves with its `return` value. Rejects with COMMAND_FAILED (carrying QEMU's error class
   * and description), TIMEOUT, ABORTED, or the reason the connection ended (CLOSED, PROTOCOL). A reply arriving
   * after a timeout or abort is dropped.
   */
  execute<T = unknown>(command: string, args?: object, opts: ExecuteOptions = {}): Promise<T> {
    const ended = this.#channel.reason;
    if (ended) {
      return Promise.reject(
        new QmpError("CLOSED", `cannot send ${command}: ${ended.message}`, { command, cause: ended }),
      );
    }
    const id = `c${this.#nextId++}`;
    const reply = this.#requests.expect<T>(
      id,
      command,
      opts.timeoutMs ?? this.#commandTimeoutMs,
      opts.signal,
    );
    this.#channel.send(
      args === undefined ? { execute: command, id } : { execute: command, arguments: args, id },
    );
    return reply;
  }

  /**
   * Subscribes to events (all, or one name). Iteration ends when the connection closes; `break` (or `return()`)
   * unsubscribes. Events queue up until read, so end an iterator you stop reading.
   */
  events(name?: string): AsyncIterableIterator<QmpEvent> {
    return this.#events.iterate(name);
  }

  /**
   * Resolves with the next event called `name` that satisfies `predicate`. Only events arriving after this call
   * count: call it before the command that triggers the event, then await it.
   */
  waitForEvent(name: string, opts: WaitForEventOptions = {}): Promise<QmpEvent> {
    return this.#events.waitFor(name, opts);
  }

  /** Closes the connection; everything still waiting is rejected with CLOSED. */
  close(): Promise<void> {
    return this.#channel.disconnect(new QmpError("CLOSED", `the QMP client of ${this.#path} was closed`));
  }

  queryStatus(): Promise<StatusInfo> {
    return this.execute<StatusInfo>("query-status");
  }

  async stop(): Promise<void> {
    await this.execute("stop");
  }

  async cont(): Promise<void> {
    await this.execute("cont");
  }

  async systemPowerdown(): Promise<void> {
    await this.execute("system_powerdown");
  }

  /**
   * Asks QEMU to exit and resolves once the connection is gone. QEMU may close the socket right after (or before)
   * its reply; both count as success. Wait for the process itself to know it has exited.
   */
  async quit(): Promise<void> {
    try {
      await this.execute("quit");
    } catch (error) {
      if (!(error instanceof QmpError && error.code === "CLOSED")) throw error;
    }
    await this.close();
  }

  async deviceAdd(driver: string, properties: Record<string, unknown> = {}): Promise<void> {
    await this.execute("device_add", { ...properties, driver });
  }

  async deviceDel(id: string): Promise<void> {
    await this.execute("device_del", { id });
  }

  #awaitGreeting(deadline: number, timeoutMs: number, signal: AbortSignal | undefined): Promise<void> {
    return new Promise((resolve, reject) => {
      const stop = guard(deadline - Date.now(), signal, (why) =>
        settle(() =>
          reject(
            why === "aborted"
              ? new QmpError("ABORTED", `connecting to QMP socket ${this.#path} was aborted`)
              : new QmpError(
                  "CONNECT_TIMEOUT",
                  `connected to ${this.#path} but QEMU sent no QMP greeting within ${timeoutMs} ms; ` +
                    "another client may hold this monitor (QEMU serves one client per -qmp socket)",
                ),
          ),
        ),
      );
      const settle = (outcome: () => void) => {
        stop();
        this.#greeted = undefined;
        outcome();
      };
      this.#greeted = { resolve: () => settle(resolve), reject: (error) => settle(() => reject(error)) };
    });
  }

  /** Dispatches one received frame: the greeting, an event, or the reply to a pending command. */
  #receive(message: unknown, frame: Frame): void {
    if (frame.kind === "oversized") {
      this.#violation(
        `a QMP message exceeds ${this.#maxLineBytes} bytes without a newline (at least ${frame.bytes} bytes): ` +
          "the peer is not a QMP server or is misbehaving; raise maxLineBytes if it is legitimate",
      );
    } else if (!isObject(message)) {
      this.#violation(`${this.#path} sent a line that is not a JSON object: is it a QMP socket?`);
    } else if (!this.#greeting) {
      this.#greet(message);
    } else if (typeof message.event === "string") {
      this.#events.dispatch(message as unknown as QmpEvent);
    } else if ("id" in message) {
      this.#requests.answer(String(message.id), message);
    } else {
      this.#idless(message);
    }
  }

  #greet(message: Record<string, unknown>): void {
    const greeting = (message as { QMP?: QmpGreeting }).QMP;
    if (greeting?.version?.qemu) {
      this.#greeting = greeting;
      this.#greeted?.resolve();
    } else if (++this.#linesBeforeGreeting > MAX_LINES_BEFORE_GREETING) {
      this.#violation(
        `${this.#path} sent ${MAX_LINES_BEFORE_GREETING} JSON messages and no QMP greeting: is it a QMP socket?`,
      );
    }
  }

  /**
   * A reply without an id: QEMU sends one for a request it could not parse, and it cannot be matched to any
   * request, so the connection ends (as qemu.qmp does) rather than guess which command failed.
   */
  #idless(message: Record<string, unknown>): void {
    if (!("error" in message)) {
      this.#violation(`${this.#path} sent a reply without an id, which QMP never does: is it a QMP socket?`);
      return;
    }
    const { errorClass, desc } = errorOf(message);
    this.#violation(
      `QEMU answered with an error without an id (${errorClass}: ${desc}): it could not parse a request, and ` +
        "such an answer cannot be matched to one, so the connection was closed; check that every argument is " +
        "valid JSON text (no lone surrogates)",
      { errorClass, desc },
    );
  }

  /** Ends the connection because the stream cannot be trusted any more. */
  #violation(message: string, details: { errorClass?: string; desc?: string } = {}): void {
    this.#channel.abort(new QmpError("PROTOCOL", message, details));
  }

  #shutdown(reason: QmpError): void {
    this.#requests.failAll(reason);
    this.#greeted?.reject(
      reason.code === "CLOSED" ? new QmpError("CLOSED", `${reason.message} before its greeting`) : reason,
    );
    this.#events.end(reason);
  }
}

function connectError(error: ConnectError): QmpError {
  switch (error.reason) {
    case "aborted":
      return new QmpError("ABORTED", `connecting to QMP socket ${error.path} was aborted`);
    case "failed":
      return new QmpError(
        "CONNECT_FAILED",
        `cannot connect to QMP socket ${error.path}: ${(error.cause as Error).message}; check that the path is ` +
          "QEMU's -qmp unix socket and is accessible",
        { cause: error.cause },
      );
    case "timeout":
      return new QmpError(
        "CONNECT_TIMEOUT",
        `QMP socket ${error.path} did not accept a connection in time (${error.errno}); check that QEMU is ` +
          "running with -qmp unix:<path>,server=on,wait=off and has not exited",
        { cause: error.cause },
      );
  }
}
