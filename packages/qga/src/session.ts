import { randomInt } from "node:crypto";
import { createConnection, type Socket } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { QgaError } from "./errors.js";
import { DELIMITER, encodeJson, type Frame, LineDecoder } from "./framing.js";

export type WireLog = (direction: "in" | "out", line: string) => void;

export interface SessionOptions {
  /** Sees every line sent and received; stdin (`input-data`) and captured output are replaced by their sizes. */
  wireLog?: WireLog;
  /** Longest reply line kept; longer ones fail the command. Default 64 MiB (two full 16 MiB outputs in base64). */
  maxLineBytes?: number;
}

export const DEFAULT_MAX_LINE_BYTES = 64 * 1024 * 1024;

/**
 * Fields that carry a process's stdin, file contents or passwords (secrets), or a process's output (large, and
 * possibly secrets too).
 */
const LOG_REDACTED = new Set(["input-data", "out-data", "err-data", "buf-b64", "password"]);
const LOG_LINE_LIMIT = 4096;

/** Errors of the socket file not being there yet, or nobody listening on it yet. */
const NOT_YET = new Set(["ENOENT", "ECONNREFUSED", "EAGAIN"]);

interface Waiter {
  onFrame(frame: Frame, message: unknown): void;
  onClose(error: QgaError): void;
}

/**
 * One connection to a guest agent. The agent answers one command at a time and its replies carry no id, so
 * commands are strictly serialised; after anything that may leave a reply in flight (a timeout, a garbled
 * reply) the channel is resynchronised before the next command is written.
 */
export class QgaSession {
  readonly socketPath: string;
  #socket: Socket;
  #decoder: LineDecoder;
  #wireLog: WireLog | undefined;
  #waiter: Waiter | undefined;
  #tail: Promise<unknown> = Promise.resolve();
  #needsResync = true;
  #closed: QgaError | undefined;
  #closing: Promise<void>;

  private constructor(socketPath: string, socket: Socket, opts: SessionOptions) {
    this.socketPath = socketPath;
    this.#socket = socket;
    this.#decoder = new LineDecoder(opts.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES);
    this.#wireLog = opts.wireLog;
    socket.on("data", (chunk: Buffer) => {
      for (const frame of this.#decoder.push(chunk)) this.#receive(frame);
    });
    let socketError: Error | undefined;
    socket.on("error", (error) => {
      socketError = error;
    });
    this.#closing = new Promise((resolve) => {
      socket.on("close", () => {
        const detail = socketError ? `: ${socketError.message}` : "";
        this.#fail(
          new QgaError("CLOSED", `the connection to the guest agent at ${socketPath} closed${detail}`, {
            cause: socketError,
          }),
        );
        resolve();
      });
    });
  }

  /** Connects (waiting for the socket to appear until the deadline) and resynchronises the channel. */
  static async open(socketPath: string, deadline: number, opts: SessionOptions = {}): Promise<QgaSession> {
    const session = new QgaSession(socketPath, await connectWhenPresent(socketPath, deadline), opts);
    try {
      await session.#serialised(() => session.#resync(deadline));
    } catch (error) {
      await session.close();
      throw error;
    }
    return session;
  }

  /** Runs one agent command and resolves with its `return` value. */
  execute(command: string, args: object | undefined, deadline: number): Promise<unknown> {
    return this.#serialised(async () => {
      if (this.#needsResync) await this.#resync(deadline);
      const reply = await this.#exchange(command, args, deadline, (frame, message) => {
        if (frame.delimited) return undefined; // a late reply to an abandoned resync
        if (frame.kind === "oversized") {
          throw new QgaError(
            "COMMAND_FAILED",
            `the reply to ${command} was ${frame.bytes} bytes, over the ${this.#decoder.maxLineBytes}-byte limit: ` +
              "raise maxLineBytes or ask for less output",
            { command },
          );
        }
        if (!isObject(message) || !("return" in message || "error" in message)) {
          this.#needsResync = true;
          throw new QgaError("COMMAND_FAILED", `unexpected reply to ${command}: ${truncate(frame.text)}`, {
            command,
          });
        }
        return { message };
      });
      const { message } = reply;
      if ("error" in message) throw agentError(command, message.error);
      return message.return;
    });
  }

  async close(): Promise<void> {
    this.#fail(new QgaError("CLOSED", "the guest agent client was closed"));
    // Nothing written afterwards matters, and a peer that never answers would never finish a graceful end.
    this.#socket.destroy();
    await this.#closing;
  }

  /**
   * Writes 0xFF (which makes the agent's JSON parser drop any half-written input a previous client left) and
   * `guest-sync-delimited` with a fresh random id, then discards everything up to the 0xFF-prefixed reply
   * carrying that id.
   */
  async #resync(deadline: number): Promise<void> {
    const id = randomInt(1, 2 ** 47);
    this.#needsResync = true;
    await this.#exchange(
      "guest-sync-delimited",
      { id },
      deadline,
      (frame, message) => (frame.delimited && isObject(message) && message.return === id ? true : undefined),
      () =>
        new QgaError(
          "AGENT_UNRESPONSIVE",
          `the guest agent at ${this.socketPath} did not answer guest-sync-delimited in time: check that qemu-ga ` +
            "runs in the guest and that no other client holds the channel, or pass a larger timeoutMs",
          { command: "guest-sync-delimited" },
        ),
      Buffer.of(DELIMITER),
    );
    this.#needsResync = false;
  }

  /**
   * Writes a command and waits for the first frame `accept` returns a value for. A timeout leaves the reply in
   * flight, so the channel is marked for a resync before the next command.
   */
  #exchange<T>(
    command: string,
    args: object | undefined,
    deadline: number,
    accept: (frame: Frame, message: unknown) => T | undefined,
    onTimeout: () => QgaError = () =>
      new QgaError("TIMEOUT", `the guest agent did not answer ${command} in time: pass a larger timeoutMs`, {
        command,
      }),
    prefix?: Buffer,
  ): Promise<T> {
    if (this.#closed) return Promise.reject(this.#closed);
    const remaining = deadline - Date.now();
    if (remaining <= 0) return Promise.reject(onTimeout());
    const request = args === undefined ? { execute: command } : { execute: command, arguments: args };
    return new Promise<T>((resolve, reject) => {
      const finish = (settle: () => void) => {
        clearTimeout(timer);
        this.#waiter = undefined;
        settle();
      };
      const timer = setTimeout(() => {
        this.#needsResync = true;
        finish(() => reject(onTimeout()));
      }, remaining);
      this.#waiter = {
        onFrame: (frame, message) => {
          let value: T | undefined;
          try {
            value = accept(frame, message);
          } catch (error) {
            finish(() => reject(error));
            return;
          }
          if (value !== undefined) finish(() => resolve(value));
        },
        onClose: (error) => finish(() => reject(error)),
      };
      this.#wireLog?.("out", `${prefix ? "\\xff" : ""}${encodeJson(request, LOG_REDACTED)}`);
      const line = `${encodeJson(request)}\n`;
      this.#socket.write(prefix ? Buffer.concat([prefix, Buffer.from(line)]) : line);
    });
  }

  #receive(frame: Frame): void {
    let message: unknown;
    if (frame.kind === "line") {
      try {
        message = JSON.parse(frame.text);
      } catch {
        message = undefined;
      }
    }
    if (this.#wireLog) {
      const marker = frame.delimited ? "\\xff" : "";
      const body =
        frame.kind === "oversized"
          ? `<${frame.bytes}-byte line dropped>`
          : message === undefined
            ? truncate(frame.text)
            : truncate(encodeJson(message, LOG_REDACTED));
      this.#wireLog("in", marker + body);
    }
    this.#waiter?.onFrame(frame, message);
  }

  #fail(error: QgaError): void {
    if (this.#closed) return;
    this.#closed = error;
    this.#waiter?.onClose(error);
  }

  #serialised<T>(task: () => Promise<T>): Promise<T> {
    const result = this.#tail.then(task);
    this.#tail = result.catch(() => undefined);
    return result;
  }
}

function agentError(command: string, error: unknown): QgaError {
  const errorClass = isObject(error) && typeof error.class === "string" ? error.class : "GenericError";
  const desc = isObject(error) && typeof error.desc === "string" ? error.desc : JSON.stringify(error);
  // qemu-ga answers CommandNotFound both for unknown commands and for ones disabled with --block-rpcs, and
  // QERR_UNSUPPORTED ("... not currently supported") when the guest lacks what a command needs (e.g. hwclock).
  if (errorClass === "CommandNotFound" || /not currently supported/.test(desc)) {
    return new QgaError(
      "UNSUPPORTED",
      `the guest agent does not offer ${command} (${desc}): update or reconfigure qemu-ga in the guest`,
      { command, errorClass, desc },
    );
  }
  return new QgaError("COMMAND_FAILED", `${command} failed in the guest: ${desc}`, {
    command,
    errorClass,
    desc,
  });
}

async function connectWhenPresent(socketPath: string, deadline: number): Promise<Socket> {
  let delay = 2;
  for (;;) {
    try {
      return await connectOnce(socketPath);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? "";
      if (!NOT_YET.has(code) || Date.now() + delay >= deadline) {
        throw new QgaError(
          "AGENT_UNRESPONSIVE",
          `cannot connect to the guest agent socket ${socketPath} (${code || String(error)}): check that QEMU ` +
            "runs with a guest agent chardev at that path, or pass a larger timeoutMs",
          { cause: error },
        );
      }
      await sleep(delay);
      delay = Math.min(delay * 2, 100);
    }
  }
}

function connectOnce(socketPath: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = createConnection(socketPath);
    socket.once("error", reject);
    socket.once("connect", () => {
      socket.off("error", reject);
      resolve(socket);
    });
  });
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function truncate(text: string): string {
  return text.length <= LOG_LINE_LIMIT ? text : `${text.slice(0, LOG_LINE_LIMIT)}... <${text.length} chars>`;
}
