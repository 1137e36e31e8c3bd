import { randomInt } from "node:crypto";
import { Channel, type ConnectError, type Frame, type WireLog } from "@stack/qmp/protocol";
import { QgaError } from "./errors.js";
import { DELIMITER, DelimitedDecoder, isDelimited } from "./framing.js";

export interface SessionOptions {
  /**
   * Sees every line sent and received, with stdin (`input-data`), file contents (`buf-b64`), captured output
   * (`out-data`, `err-data`), passwords and other secrets replaced by their sizes. Exceptions it throws are ignored.
   */
  wireLog?: WireLog;
  /** Longest reply line kept; longer ones fail the command. Default 64 MiB (two full 16 MiB outputs in base64). */
  maxLineBytes?: number;
}

const DEFAULT_MAX_LINE_BYTES = 64 * 1024 * 1024;
const SHOWN_REPLY_CHARS = 4096;

interface Waiter {
  onFrame(frame: Frame, message: unknown): void;
  onClose(error: QgaError): void;
}

/**
 * One connection to a guest agent, over the protocol layer QMP uses. The agent answers one command at a time and
 * its replies carry no id, so commands are strictly serialised; after anything that may leave a reply in flight
 * (a timeout, a garbled reply) the channel is resynchronised before the next command is written.
 */
export class QgaSession {
  readonly socketPath: string;
  readonly #channel: Channel<QgaError>;
  readonly #decoder: DelimitedDecoder;
  #waiter: Waiter | undefined;
  #tail: Promise<unknown> = Promise.resolve();
  #needsResync = true;

  private constructor(socketPath: string, opts: SessionOptions) {
    this.socketPath = socketPath;
    this.#decoder = new DelimitedDecoder(opts.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES);
    this.#channel = new Channel<QgaError>({
      decoder: this.#decoder,
      wireLog: opts.wireLog,
      onMessage: (message, frame) => this.#waiter?.onFrame(frame, message),
      onClose: (reason) => this.#waiter?.onClose(reason),
      connectError,
      closedError: (cause) =>
        new QgaError(
          "CLOSED",
          `the connection to the guest agent at ${socketPath} closed${cause ? `: ${cause.message}` : ""}`,
          { cause },
        ),
    });
  }

  /** Connects (waiting for the socket to appear until the deadline) and resynchronises the channel. */
  static async open(socketPath: string, deadline: number, opts: SessionOptions = {}): Promise<QgaSession> {
    const session = new QgaSession(socketPath, opts);
    await session.#channel.connect(socketPath, { deadline }, () =>
      session.#serialised(() => session.#resync(deadline)),
    );
    return session;
  }

  /** Runs one agent command and resolves with its `return` value. */
  execute(command: string, args: object | undefined, deadline: number): Promise<unknown> {
    return this.#serialised(async () => {
      if (this.#needsResync) await this.#resync(deadline);
      const message = await this.#exchange(command, args, deadline, (frame, message) => {
        if (isDelimited(frame)) return undefined; // a late reply to an abandoned resync
        if (frame.kind === "oversized") {
          throw new QgaError(
            "COMMAND_FAILED",
            `the reply to ${command} exceeds the ${this.#decoder.maxLineBytes}-byte limit (at least ${frame.bytes} ` +
              "bytes): raise maxLineBytes or ask for less output",
            { command },
          );
        }
        if (!isObject(message) || !("return" in message || "error" in message)) {
          this.#needsResync = true;
          throw new QgaError("COMMAND_FAILED", `unexpected reply to ${command}: ${shown(frame.text)}`, {
            command,
          });
        }
        return message;
      });
      if ("error" in message) throw agentError(command, message.error);
      return message.return;
    });
  }

  /** Ends the connection; a command still waiting is rejected with CLOSED. */
  close(): Promise<void> {
    return this.#channel.disconnect(new QgaError("CLOSED", "the guest agent client was closed"));
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
      (frame, message) =>
        isDelimited(frame) && isObject(message) && message.return === id ? true : undefined,
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
    const ended = this.#channel.reason;
    if (ended) return Promise.reject(ended);
    const remaining = deadline - Date.now();
    if (remaining <= 0) return Promise.reject(onTimeout());
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
      this.#channel.send(
        args === undefined ? { execute: command } : { execute: command, arguments: args },
        prefix,
      );
    });
  }

  #serialised<T>(task: () => Promise<T>): Promise<T> {
    const result = this.#tail.then(task);
    this.#tail = result.catch(() => undefined);
    return result;
  }
}

function connectError(error: ConnectError): QgaError {
  return new QgaError(
    "AGENT_UNRESPONSIVE",
    `cannot connect to the guest agent socket ${error.path} (${error.errno ?? error.reason}): check that QEMU ` +
      "runs with a guest agent chardev at that path, or pass a larger timeoutMs",
    { cause: error.cause },
  );
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

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function shown(text: string): string {
  return text.length <= SHOWN_REPLY_CHARS
    ? text
    : `${text.slice(0, SHOWN_REPLY_CHARS)}... <${text.length} chars>`;
}
