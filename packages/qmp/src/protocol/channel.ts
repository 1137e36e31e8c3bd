import type { Socket } from "node:net";
import { ConnectError, connectSocket } from "./connect.js";
import { type Decoder, encodeJson, type Frame, parseJson } from "./framing.js";
import { describeReceived, describeSent, type WireLog } from "./redact.js";

/**
 * Where a channel is in its life, as qemu.qmp's `Runstate`: `idle` before `connect` and again once the socket is
 * gone, `connecting` while the socket is opened and the client's session is established (greeting, negotiation,
 * resync), `running` while messages flow, `disconnecting` from the moment the channel has a reason to end until
 * its socket has closed. A channel connects once.
 */
export type Runstate = "idle" | "connecting" | "running" | "disconnecting";

export interface ChannelOptions<E extends Error> {
  decoder: Decoder;
  /** Sees every line sent and received, secrets redacted. Exceptions it throws are ignored. */
  wireLog?: WireLog | undefined;
  /** Each frame received while connecting or running, with its JSON value (undefined if not JSON or oversized). */
  onMessage(message: unknown, frame: Frame): void;
  /** The channel is ending, with this reason: called once, before `closed` resolves. */
  onClose(reason: E): void;
  /** The client's error for a socket that could not be opened. */
  connectError(error: ConnectError): E;
  /** The client's error for a socket the peer closed (or that failed, with `cause`). */
  closedError(cause: Error | undefined): E;
}

/** How long `disconnect` lets the peer close its side before the socket is destroyed. */
const CLOSE_GRACE_MS = 1000;

/**
 * One connection to a server speaking newline-delimited JSON over a unix socket: connect with retry, framing,
 * the wire log, and an explicit run state. What the messages mean is the client's business (`onMessage`).
 * Everything that ends the channel goes through one place, which calls `onClose` once with the reason.
 */
export class Channel<E extends Error> {
  /** Resolves (never rejects) with the reason once the socket is gone. */
  readonly closed: Promise<E>;
  readonly #opts: ChannelOptions<E>;
  #runstate: Runstate = "idle";
  #socket: Socket | undefined;
  #reason: E | undefined;
  #resolveClosed!: (reason: E) => void;

  constructor(opts: ChannelOptions<E>) {
    this.#opts = opts;
    this.closed = new Promise((resolve) => {
      this.#resolveClosed = resolve;
    });
  }

  get runstate(): Runstate {
    return this.#runstate;
  }

  /** Why the channel ended or is ending; undefined while it may still be used. */
  get reason(): E | undefined {
    return this.#reason;
  }

  /**
   * Opens the socket (retrying until `deadline` while it does not exist or nobody listens yet), then runs
   * `establish` (the client's greeting, negotiation or resync, which may already send and receive) and only then
   * reports `running`. On any failure the channel ends with that error as its reason, is back to `idle`, and the
   * error is thrown.
   */
  async connect(
    path: string,
    opts: { deadline: number; signal?: AbortSignal | undefined },
    establish: () => Promise<void>,
  ): Promise<void> {
    if (this.#runstate !== "idle" || this.#reason)
      throw new Error(`a channel connects once (it is ${this.#runstate})`);
    this.#runstate = "connecting";
    try {
      const socket = await connectSocket(path, opts);
      if (this.#reason) {
        socket.destroy();
        throw this.#reason;
      }
      this.#attach(socket);
    } catch (error) {
      const reason = error instanceof ConnectError ? this.#opts.connectError(error) : (error as E);
      this.#end(reason);
      throw reason;
    }
    try {
      await establish();
    } catch (error) {
      this.abort(error as E);
      await this.closed;
      throw error;
    }
    if (this.#reason) throw this.#reason;
    this.#runstate = "running";
  }

  /** Writes one message as a line, after `prefix` (bytes outside the JSON). Throws the reason once ended. */
  send(message: object, prefix?: Buffer): void {
    if (this.#reason || !this.#socket) throw this.#reason ?? new Error("send() before connect()");
    this.#log("out", () => describeSent(message, prefix));
    const line = `${encodeJson(message)}\n`;
    this.#socket.write(prefix ? Buffer.concat([prefix, Buffer.from(line)]) : line);
  }

  /**
   * Ends the channel with `reason`: what was written is still delivered, then the socket is closed (destroyed if
   * the peer does not close its side within a second). Resolves once the socket is gone.
   */
  async disconnect(reason: E): Promise<void> {
    const socket = this.#socket;
    if (!this.#end(reason) || !socket) {
      await this.closed;
      return;
    }
    socket.end();
    const timer = setTimeout(() => socket.destroy(), CLOSE_GRACE_MS);
    timer.unref();
    await this.closed;
    clearTimeout(timer);
  }

  /** Ends the channel with `reason` at once, dropping anything still unsent: the stream cannot be trusted. */
  abort(reason: E): void {
    if (this.#end(reason)) this.#socket?.destroy();
  }

  #attach(socket: Socket): void {
    this.#socket = socket;
    let lastError: Error | undefined;
    socket.on("error", (error) => {
      lastError = error;
    });
    socket.on("close", () => {
      this.#end(this.#opts.closedError(lastError));
      this.#runstate = "idle";
      this.#resolveClosed(this.#reason as E);
    });
    socket.on("data", (chunk: Buffer) => {
      for (const frame of this.#opts.decoder.push(chunk)) {
        // A frame may end the channel (a protocol violation); what follows it is not the client's any more.
        if (this.#reason) return;
        const message = frame.kind === "line" ? parseJson(frame.text) : undefined;
        this.#log("in", () => describeReceived(frame, message));
        this.#opts.onMessage(message, frame);
      }
    });
  }

  /**
   * Records the reason and tells the client, the first time only; true if this call did. Without a socket there
   * is nothing to wait for, so the channel is idle and `closed` resolves at once.
   */
  #end(reason: E): boolean {
    if (this.#reason) return false;
    this.#reason = reason;
    this.#runstate = "disconnecting";
    this.#opts.onClose(reason);
    if (!this.#socket) {
      this.#runstate = "idle";
      this.#resolveClosed(reason);
    }
    return true;
  }

  #log(direction: "in" | "out", line: () => string): void {
    if (!this.#opts.wireLog) return;
    try {
      this.#opts.wireLog(direction, line());
    } catch {
      // A failing debug hook must not break the protocol (it runs inside the socket's data handler).
    }
  }
}
