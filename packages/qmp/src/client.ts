import net from "node:net";
import { setTimeout as delay } from "node:timers/promises";
import { QmpError } from "./errors.js";
import { DEFAULT_MAX_LINE_BYTES, encodeMessage, LineDecoder } from "./framing.js";
import { redactLine } from "./redact.js";
import type {
  ConnectOptions,
  ExecuteOptions,
  MigrationCapabilityStatus,
  MigrationInfo,
  QmpEvent,
  QmpGreeting,
  StatusInfo,
  VersionInfo,
  WaitForEventOptions,
  WireLog,
} from "./types.js";

const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
const DEFAULT_COMMAND_TIMEOUT_MS = 60_000;

interface Pending {
  command: string;
  resolve: (value: unknown) => void;
  reject: (error: QmpError) => void;
}

type EventListener = (event: QmpEvent) => void;
type CloseListener = (error: QmpError) => void;

/**
 * Arms a deadline and an abort listener; whichever fires first calls `onStop`, once, unless the returned disposer
 * ran before.
 */
function guard(
  timeoutMs: number | undefined,
  signal: AbortSignal | undefined,
  onStop: (code: "TIMEOUT" | "ABORTED") => void,
): () => void {
  let timer: NodeJS.Timeout | undefined;
  let active = true;
  const fire = (code: "TIMEOUT" | "ABORTED") => {
    if (!active) return;
    dispose();
    onStop(code);
  };
  const onAbort = () => fire("ABORTED");
  const dispose = () => {
    active = false;
    if (timer) clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
  };
  if (signal?.aborted) {
    // Deferred so the caller has finished registering what onStop undoes.
    queueMicrotask(onAbort);
    return dispose;
  }
  if (timeoutMs !== undefined && Number.isFinite(timeoutMs))
    timer = setTimeout(() => fire("TIMEOUT"), timeoutMs);
  signal?.addEventListener("abort", onAbort, { once: true });
  return dispose;
}

/** Every QMP message is a JSON object; anything else means the peer is not speaking QMP. */
const MAX_LINES_BEFORE_GREETING = 16;

function parseObject(line: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(line);
    return value !== null && typeof value === "object" && !Array.isArray(value)
      ? (value as Record<string, unknown>)
      : undefined;
  } catch {
    return undefined;
  }
}

function isRetryableConnectError(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  // ENOENT: QEMU has not created the socket yet. ECONNREFUSED: a stale socket file, or QEMU not listening yet.
  return code === "ENOENT" || code === "ECONNREFUSED";
}

function openSocket(path: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection(path);
    const onError = (error: Error) => {
      socket.destroy();
      reject(error);
    };
    socket.once("error", onError);
    socket.once("connect", () => {
      socket.off("error", onError);
      resolve(socket);
    });
  });
}

async function connectUntil(
  path: string,
  deadline: number,
  signal: AbortSignal | undefined,
): Promise<net.Socket> {
  let backoff = 5;
  for (;;) {
    if (signal?.aborted) throw new QmpError("ABORTED", `connecting to QMP socket ${path} was aborted`);
    try {
      return await openSocket(path);
    } catch (error) {
      if (!isRetryableConnectError(error)) {
        throw new QmpError(
          "CONNECT_FAILED",
          `cannot connect to QMP socket ${path}: ${(error as Error).message}; check that the path is QEMU's -qmp unix socket and is accessible`,
          { cause: error },
        );
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new QmpError(
          "CONNECT_TIMEOUT",
          `QMP socket ${path} did not accept a connection in time (${(error as NodeJS.ErrnoException).code}); ` +
            "check that QEMU is running with -qmp unix:<path>,server=on,wait=off and has not exited",
          { cause: error },
        );
      }
      await delay(Math.min(backoff, left), undefined, signal ? { signal } : undefined).catch(() => undefined);
      backoff = Math.min(backoff * 2, 100);
    }
  }
}

/**
 * A QMP client over one negotiated connection. Commands carry ids and may overlap; replies are matched by id,
 * events are dispatched to subscribers, and a closed connection rejects everything still waiting with `CLOSED`.
 */
export class QmpClient {
  /** Resolves (never rejects) with the reason once the connection is gone. */
  readonly closed: Promise<QmpError>;

  private readonly socket: net.Socket;
  private readonly socketPath: string;
  private readonly wireLog: WireLog | undefined;
  private readonly commandTimeoutMs: number;
  private readonly pending = new Map<string, Pending>();
  /** Ids in send order whose reply has not arrived, abandoned ones included: QEMU answers in order. */
  private readonly unanswered: string[] = [];
  private readonly eventListeners = new Set<EventListener>();
  private readonly closeListeners = new Set<CloseListener>();
  private receivedGreeting: QmpGreeting | undefined;
  private linesBeforeGreeting = 0;
  private onGreeting: ((greeting: QmpGreeting) => void) | undefined;
  private closeReason: QmpError | undefined;
  private nextId = 1;

  private constructor(socket: net.Socket, socketPath: string, options: ConnectOptions) {
    this.socket = socket;
    this.socketPath = socketPath;
    this.wireLog = options.wireLog;
    this.commandTimeoutMs = options.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
    this.closed = new Promise((resolve) => this.closeListeners.add(resolve));
    const decoder = new LineDecoder(options.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES);
    let lastError: Error | undefined;
    socket.on("error", (error) => {
      lastError = error;
    });
    socket.on("close", () => {
      this.shutdown(
        new QmpError(
          "CLOSED",
          `QMP connection to ${socketPath} closed${lastError ? ` (${lastError.message})` : ""}: QEMU exited or the client was closed`,
          lastError ? { cause: lastError } : {},
        ),
      );
    });
    socket.on("data", (chunk: Buffer) => {
      let lines: string[];
      try {
        lines = decoder.push(chunk);
      } catch (error) {
        this.fail(error as QmpError);
        return;
      }
      for (const line of lines) this.handleLine(line);
    });
  }

  /** The server's greeting: QEMU version and the capabilities it offered. */
  get greeting(): QmpGreeting {
    if (!this.receivedGreeting) throw new QmpError("PROTOCOL", "no QMP greeting received yet");
    return this.receivedGreeting;
  }

  /**
   * Waits for the unix socket to appear (until `timeoutMs`), reads the greeting and leaves capabilities
   * negotiation mode. QEMU serves one client per `-qmp` socket: a second client gets no greeting until the first
   * disconnects, which shows up here as CONNECT_TIMEOUT.
   */
  static async connect(socketPath: string, opts: ConnectOptions = {}): Promise<QmpClient> {
    const timeoutMs = opts.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    const deadline = Date.now() + timeoutMs;
    const client = new QmpClient(await connectUntil(socketPath, deadline, opts.signal), socketPath, opts);
    try {
      await client.awaitGreeting(deadline, timeoutMs, opts.signal);
      await client.execute("qmp_capabilities", undefined, {
        timeoutMs: Math.max(1, deadline - Date.now()),
        ...(opts.signal ? { signal: opts.signal } : {}),
      });
      return client;
    } catch (error) {
      client.socket.destroy();
      if (error instanceof QmpError && error.code === "TIMEOUT") {
        throw new QmpError(
          "CONNECT_TIMEOUT",
          `QMP negotiation on ${socketPath} did not finish in ${timeoutMs} ms`,
          {
            cause: error,
          },
        );
      }
      throw error;
    }
  }

  private awaitGreeting(deadline: number, timeoutMs: number, signal: AbortSignal | undefined): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.receivedGreeting) {
        resolve();
        return;
      }
      const cleanup = () => {
        stop();
        this.onGreeting = undefined;
        this.closeListeners.delete(onClose);
      };
      const onClose: CloseListener = (reason) => {
        cleanup();
        reject(
          reason.code === "CLOSED" ? new QmpError("CLOSED", `${reason.message} before its greeting`) : reason,
        );
      };
      const stop = guard(Math.max(0, deadline - Date.now()), signal, (code) => {
        cleanup();
        reject(
          code === "ABORTED"
            ? new QmpError("ABORTED", `connecting to QMP socket ${this.socketPath} was aborted`)
            : new QmpError(
                "CONNECT_TIMEOUT",
                `connected to ${this.socketPath} but QEMU sent no QMP greeting within ${timeoutMs} ms; ` +
                  "another client may hold this monitor (QEMU serves one client per -qmp socket)",
              ),
        );
      });
      this.onGreeting = () => {
        cleanup();
        resolve();
      };
      this.closeListeners.add(onClose);
    });
  }

  private log(dir: "in" | "out", line: string): void {
    if (!this.wireLog) return;
    try {
      this.wireLog(dir, redactLine(line));
    } catch {
      // A failing debug hook must not break the protocol (it runs inside the socket's data handler).
    }
  }

  /** Ends the connection because the stream cannot be trusted any more. */
  private fail(reason: QmpError): void {
    this.shutdown(reason);
    this.socket.destroy();
  }

  private handleLine(line: string): void {
    if (this.closeReason) return;
    this.log("in", line);
    const message = parseObject(line);
    if (!message) {
      this.fail(
        new QmpError(
          "PROTOCOL",
          `${this.socketPath} sent a line that is not a JSON object: is it a QMP socket?`,
        ),
      );
      return;
    }
    if (!this.receivedGreeting) {
      const greeting = (message as { QMP?: QmpGreeting }).QMP;
      if (!greeting?.version?.qemu) {
        // JSON, but not the greeting: seen once in CI as the first line from a freshly started QEMU 7.2 (cause
        // unknown). Waiting for the greeting costs nothing; a peer that keeps sending other things is refused.
        if (++this.linesBeforeGreeting <= MAX_LINES_BEFORE_GREETING) return;
        this.fail(
          new QmpError(
            "PROTOCOL",
            `${this.socketPath} sent ${MAX_LINES_BEFORE_GREETING} JSON messages and no QMP greeting: is it a QMP socket?`,
          ),
        );
        return;
      }
      this.receivedGreeting = greeting;
      this.onGreeting?.(greeting);
      return;
    }
    if (typeof message.event === "string") {
      const event = message as unknown as QmpEvent;
      for (const listener of [...this.eventListeners]) listener(event);
      return;
    }
    const hasId = "id" in message;
    const isError = "error" in message;
    if (!isError && !(hasId && "return" in message)) return;
    // QEMU answers non-OOB commands in order, so an error without id (QEMU could not parse that request) belongs to
    // the oldest request still unanswered.
    const id = hasId ? String(message.id) : this.unanswered[0];
    if (id === undefined) return;
    const at = this.unanswered.indexOf(id);
    if (at !== -1) this.unanswered.splice(at, 1);
    const pending = this.pending.get(id);
    if (!pending) return; // abandoned (timed out, aborted) or not ours: dropped
    this.pending.delete(id);
    if (isError) {
      const err = (message.error ?? {}) as { class?: string; desc?: string };
      const errorClass = err.class ?? "GenericError";
      const desc = err.desc ?? "(no description)";
      pending.reject(
        hasId
          ? new QmpError("COMMAND_FAILED", `QMP command ${pending.command} failed: ${errorClass}: ${desc}`, {
              errorClass,
              desc,
              command: pending.command,
            })
          : new QmpError(
              "PROTOCOL",
              `QEMU could not parse the ${pending.command} request: ${errorClass}: ${desc}; check its arguments are valid JSON text (no lone surrogates)`,
              { errorClass, desc, command: pending.command },
            ),
      );
    } else {
      pending.resolve(message.return);
    }
  }

  private shutdown(reason: QmpError): void {
    if (this.closeReason) return;
    this.closeReason = reason;
    for (const [id, pending] of this.pending) {
      this.pending.delete(id);
      pending.reject(
        new QmpError(reason.code, `${reason.message} (while waiting for the reply to ${pending.command})`, {
          command: pending.command,
          cause: reason,
        }),
      );
    }
    this.unanswered.length = 0;
    for (const listener of [...this.closeListeners]) listener(reason);
    this.closeListeners.clear();
  }

  /** True until the connection closes. */
  get isOpen(): boolean {
    return this.closeReason === undefined;
  }

  /**
   * Sends one command and resolves with its `return` value. Rejects with COMMAND_FAILED (carrying QEMU's error class
   * and description), TIMEOUT, ABORTED, or CLOSED. A reply arriving after a timeout or abort is dropped.
   */
  execute<T = unknown>(command: string, args?: object, opts: ExecuteOptions = {}): Promise<T> {
    if (this.closeReason) {
      return Promise.reject(
        new QmpError("CLOSED", `cannot send ${command}: ${this.closeReason.message}`, {
          command,
          cause: this.closeReason,
        }),
      );
    }
    const id = `c${this.nextId++}`;
    const line = encodeMessage(
      args === undefined ? { execute: command, id } : { execute: command, arguments: args, id },
    );
    return new Promise<T>((resolve, reject) => {
      const stop = guard(opts.timeoutMs ?? this.commandTimeoutMs, opts.signal, (code) => {
        if (!this.pending.delete(id)) return;
        reject(
          code === "TIMEOUT"
            ? new QmpError(
                "TIMEOUT",
                `QMP command ${command} got no reply within ${opts.timeoutMs ?? this.commandTimeoutMs} ms; QEMU may be hung`,
                { command },
              )
            : new QmpError("ABORTED", `QMP command ${command} was aborted`, { command }),
        );
      });
      this.pending.set(id, {
        command,
        resolve: (value) => {
          stop();
          resolve(value as T);
        },
        reject: (error) => {
          stop();
          reject(error);
        },
      });
      this.unanswered.push(id);
      this.log("out", line.trimEnd());
      this.socket.write(line);
    });
  }

  /**
   * Subscribes to events (all, or one name). Iteration ends when the connection closes; `break` (or `return()`)
   * unsubscribes. Events queue up until read, so end an iterator you stop reading.
   */
  events(name?: string): AsyncIterableIterator<QmpEvent> {
    const queue: QmpEvent[] = [];
    let waiter: ((result: IteratorResult<QmpEvent>) => void) | undefined;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      this.eventListeners.delete(onEvent);
      this.closeListeners.delete(finish);
      waiter?.({ value: undefined, done: true });
      waiter = undefined;
    };
    const onEvent: EventListener = (event) => {
      if (name !== undefined && event.event !== name) return;
      if (waiter) {
        const w = waiter;
        waiter = undefined;
        w({ value: event, done: false });
      } else {
        queue.push(event);
      }
    };
    if (this.closeReason) done = true;
    else {
      this.eventListeners.add(onEvent);
      this.closeListeners.add(finish);
    }
    const iterator: AsyncIterableIterator<QmpEvent> = {
      next: () => {
        const queued = queue.shift();
        if (queued) return Promise.resolve({ value: queued, done: false });
        if (done) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => {
          waiter = resolve;
        });
      },
      return: () => {
        finish();
        queue.length = 0;
        return Promise.resolve({ value: undefined, done: true });
      },
      [Symbol.asyncIterator]: () => iterator,
    };
    return iterator;
  }

  /**
   * Resolves with the next event called `name` that satisfies `predicate`. Only events arriving after this call
   * count: call it before the command that triggers the event, then await it.
   */
  waitForEvent(name: string, opts: WaitForEventOptions = {}): Promise<QmpEvent> {
    return new Promise((resolve, reject) => {
      if (this.closeReason) {
        reject(new QmpError("CLOSED", `cannot wait for ${name}: ${this.closeReason.message}`));
        return;
      }
      const cleanup = () => {
        stop();
        this.eventListeners.delete(onEvent);
        this.closeListeners.delete(onClose);
      };
      const onEvent: EventListener = (event) => {
        if (event.event !== name) return;
        let matches: boolean;
        try {
          matches = opts.predicate ? opts.predicate(event) : true;
        } catch (error) {
          cleanup();
          reject(error);
          return;
        }
        if (!matches) return;
        cleanup();
        resolve(event);
      };
      const onClose: CloseListener = (reason) => {
        cleanup();
        reject(
          new QmpError("CLOSED", `${reason.message} (while waiting for event ${name})`, { cause: reason }),
        );
      };
      const stop = guard(opts.timeoutMs, opts.signal, (code) => {
        cleanup();
        reject(
          code === "TIMEOUT"
            ? new QmpError("TIMEOUT", `QMP event ${name} did not arrive within ${opts.timeoutMs} ms`)
            : new QmpError("ABORTED", `waiting for QMP event ${name} was aborted`),
        );
      });
      this.eventListeners.add(onEvent);
      this.closeListeners.add(onClose);
    });
  }

  /** Closes the connection; everything still waiting is rejected with CLOSED. */
  async close(): Promise<void> {
    if (this.closeReason) return;
    const closed = this.closed;
    this.socket.end();
    // A peer that never closes its side must not keep us waiting.
    const timer = setTimeout(() => this.socket.destroy(), 1000);
    timer.unref();
    await closed;
    clearTimeout(timer);
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

  queryVersion(): Promise<VersionInfo> {
    return this.execute<VersionInfo>("query-version");
  }

  queryMigrateCapabilities(): Promise<MigrationCapabilityStatus[]> {
    return this.execute<MigrationCapabilityStatus[]>("query-migrate-capabilities");
  }

  async setMigrateCapabilities(capabilities: Record<string, boolean>): Promise<void> {
    await this.execute("migrate-set-capabilities", {
      capabilities: Object.entries(capabilities).map(([capability, state]) => ({ capability, state })),
    });
  }

  async setMigrateParameters(parameters: Record<string, unknown>): Promise<void> {
    await this.execute("migrate-set-parameters", parameters);
  }

  /** QEMU's default of 128 MiB/s throttles even a paused save to a local file. */
  setMaxBandwidth(bytesPerSecond: number): Promise<void> {
    return this.setMigrateParameters({ "max-bandwidth": bytesPerSecond });
  }

  queryMigrate(): Promise<MigrationInfo> {
    return this.execute<MigrationInfo>("query-migrate");
  }

  async migrate(uri: string): Promise<void> {
    await this.execute("migrate", { uri });
  }

  /** For a QEMU started with `-incoming defer`. */
  async migrateIncoming(uri: string): Promise<void> {
    await this.execute("migrate-incoming", { uri });
  }

  async migrateCancel(): Promise<void> {
    await this.execute("migrate_cancel");
  }

  async deviceAdd(driver: string, properties: Record<string, unknown> = {}): Promise<void> {
    await this.execute("device_add", { ...properties, driver });
  }

  async deviceDel(id: string): Promise<void> {
    await this.execute("device_del", { id });
  }
}
