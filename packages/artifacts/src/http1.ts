import type { IncomingHttpHeaders } from "node:http";
import { connect as connectTcp, type OnReadOpts, type Socket } from "node:net";
import { type ConnectionOptions, connect as connectTls } from "node:tls";

/**
 * One HTTP/1.1 GET on its own connection, with the body read straight from the socket into 1 MiB buffers.
 *
 * Why not node:http for image bodies: it allocates a 64 KiB buffer per socket read and runs every one through the
 * parser and a stream; at a gigabyte that is 16 000 allocations and events, 1-2 CPU-seconds per GiB on a small
 * machine, several times what the same bytes cost curl. Here the socket reads (`onread`) land in the buffer that
 * is handed on, so a GiB is about a thousand chunks and no copy. Used for downloads only; API calls stay on
 * node:http.
 */

/** Body bytes are handed on in buffers of this size (smaller only at the end of the body). */
const CHUNK_BYTES = 1 << 20;
/** A read gets at least this much room; a fuller buffer is handed on first. */
const MIN_READ_BYTES = 64 << 10;
/** The socket pauses while this much body waits for the consumer. */
const MAX_QUEUED_BYTES = 8 * CHUNK_BYTES;
/** A response head (status line and headers) longer than this is refused. */
const MAX_HEAD_BYTES = 64 << 10;

export interface Http1Options {
  signal?: AbortSignal;
  /** The attempt fails after this long without traffic on the connection (connect, head or body). */
  stallTimeoutMs?: number;
  /** Makes the socket's errors for a quiet connection; defaults to a plain Error. */
  stallError?: (ms: number) => Error;
  /** Extra trusted CA certificates (PEM) for https, on top of Node's. */
  ca?: string | Buffer;
}

/**
 * A response body: iterate it for its bytes (every byte received is yielded before an error is thrown, so a
 * download can resume after them), or destroy it to close the connection.
 */
export interface Body extends AsyncIterable<Buffer> {
  destroy(error?: Error): void;
}

export interface Http1Response {
  statusCode: number;
  headers: IncomingHttpHeaders;
  body: Body;
}

export class Http1Error extends Error {
  constructor(
    message: string,
    readonly code: "EPROTO" | "ECONNRESET",
  ) {
    super(message);
  }
}

export function http1Get(
  url: URL,
  headers: Record<string, string>,
  opts: Http1Options = {},
): Promise<Http1Response> {
  return new Promise((resolve, reject) => {
    // Built first: a header that would split the request is refused before any connection exists.
    const head = requestHead(url, headers);
    const reader = new ResponseReader(resolve, reject);
    const port = Number(url.port) || (url.protocol === "https:" ? 443 : 80);
    const host = url.hostname.replace(/^\[(.*)\]$/, "$1");
    const onread: OnReadOpts = { buffer: () => reader.readBuffer(), callback: (n) => reader.received(n) };
    let socket: Socket;
    if (url.protocol === "https:") {
      // TLS sockets take `onread` too (the reads are the decrypted records); Node's types just do not say so.
      const tls: ConnectionOptions & { onread: OnReadOpts } = {
        host,
        port,
        ALPNProtocols: ["http/1.1"],
        onread,
        ...(isIp(host) ? {} : { servername: host }),
        ...(opts.ca ? { ca: opts.ca } : {}),
      };
      socket = connectTls(tls);
    } else {
      socket = connectTcp({ host, port, onread });
    }
    reader.attach(socket);
    const fail = (err: Error) => socket.destroy(err);
    if (opts.stallTimeoutMs) {
      const ms = opts.stallTimeoutMs;
      socket.setTimeout(ms, () => fail(opts.stallError?.(ms) ?? new Error(`no data for ${ms} ms`)));
    }
    if (opts.signal) {
      const signal = opts.signal;
      if (signal.aborted) fail(abortReason(signal));
      else {
        const onAbort = () => fail(abortReason(signal));
        signal.addEventListener("abort", onAbort, { once: true });
        socket.once("close", () => signal.removeEventListener("abort", onAbort));
      }
    }
    socket.write(head);
  });
}

function requestHead(url: URL, headers: Record<string, string>): string {
  const lines = [`GET ${url.pathname}${url.search} HTTP/1.1`, `host: ${url.host}`];
  for (const [name, value] of Object.entries(headers)) {
    const lower = name.toLowerCase();
    if (lower === "host" || lower === "connection") continue;
    if (/[\r\n]/.test(name) || /[\r\n]/.test(value)) throw new TypeError(`invalid header ${name}`);
    lines.push(`${name}: ${value}`);
  }
  // One request per connection: the body then ends at the latest when the server closes.
  lines.push("connection: close");
  return `${lines.join("\r\n")}\r\n\r\n`;
}

type BodyMode = { kind: "length"; left: number } | { kind: "chunked" } | { kind: "close" } | { kind: "none" };

/** Turns socket reads into a response: the head parsed from the first bytes, then the body as a queue. */
class ResponseReader {
  private socket: Socket | undefined;
  private buffer = Buffer.allocUnsafe(CHUNK_BYTES);
  /** Bytes in `buffer` that are ready: the head while it arrives, then decoded body bytes. */
  private filled = 0;
  private body: Body | undefined;
  private readonly queue: Buffer[] = [];
  private queuedBytes = 0;
  private failure: Error | undefined;
  private wake: (() => void) | undefined;
  private mode: BodyMode = { kind: "none" };
  private chunked = new ChunkedDecoder();
  private ended = false;

  constructor(
    private readonly resolve: (res: Http1Response) => void,
    private readonly reject: (err: Error) => void,
  ) {}

  attach(socket: Socket): void {
    this.socket = socket;
    socket.on("end", () => this.finish());
    socket.on("error", (err) => this.abort(err));
    socket.on("close", () => this.finish());
  }

  readBuffer(): Buffer {
    if (this.body && this.buffer.length - this.filled < MIN_READ_BYTES) this.flush();
    return this.buffer.subarray(this.filled);
  }

  /** `n` bytes arrived at `filled`; false pauses the socket until the consumer asks for more. */
  received(n: number): boolean {
    if (n > 0 && !this.ended) {
      if (this.body) this.receivedBody(this.filled, n);
      else this.receivedHead(n);
    }
    return this.queuedBytes < MAX_QUEUED_BYTES;
  }

  private receivedHead(n: number): void {
    const start = Math.max(0, this.filled - 3);
    this.filled += n;
    const end = this.buffer.subarray(0, this.filled).indexOf("\r\n\r\n", start, "latin1");
    if (end < 0) {
      if (this.filled > MAX_HEAD_BYTES) this.abort(new Http1Error("response head too long", "EPROTO"));
      return;
    }
    let head: { statusCode: number; headers: IncomingHttpHeaders };
    try {
      head = parseHead(this.buffer.toString("latin1", 0, end));
      this.mode = bodyMode(head.statusCode, head.headers);
    } catch (err) {
      this.abort(err as Error);
      return;
    }
    const rest = this.filled - (end + 4);
    this.buffer.copyWithin(0, end + 4, this.filled);
    this.filled = 0;
    if (head.statusCode < 200) {
      // 1xx: informational, the real answer follows.
      if (rest > 0) this.receivedHead(rest);
      return;
    }
    this.body = {
      [Symbol.asyncIterator]: () => this.chunks(),
      // The consumer gave up on the body: the connection has nothing else to carry.
      destroy: () => this.close(),
    };
    this.resolve({ ...head, body: this.body });
    if (this.mode.kind === "none") this.end();
    else if (rest > 0) this.receivedBody(0, rest);
  }

  /** Body bytes at [at, at + n): decoded in place, handed on once the buffer is nearly full. */
  private receivedBody(at: number, n: number): void {
    const mode = this.mode;
    if (mode.kind === "chunked") {
      let decoded: number;
      try {
        decoded = this.chunked.decode(this.buffer, at, at + n);
      } catch (err) {
        this.abort(err as Error);
        return;
      }
      this.filled = at + decoded;
      if (this.chunked.done) this.end();
    } else if (mode.kind === "length") {
      const take = Math.min(n, mode.left);
      mode.left -= take;
      this.filled = at + take;
      if (mode.left === 0) this.end();
    } else {
      this.filled = at + n;
    }
  }

  /** Hands the ready bytes on and starts a fresh buffer (the consumer keeps the old one). */
  private flush(): void {
    if (!this.body || this.filled === 0) return;
    const ready = this.buffer.subarray(0, this.filled);
    this.buffer = Buffer.allocUnsafe(CHUNK_BYTES);
    this.filled = 0;
    this.queue.push(ready);
    this.queuedBytes += ready.length;
    this.signal();
  }

  private async *chunks(): AsyncGenerator<Buffer> {
    try {
      for (;;) {
        const chunk = this.queue.shift();
        if (chunk) {
          this.queuedBytes -= chunk.length;
          if (this.queuedBytes < MAX_QUEUED_BYTES && !this.ended) this.socket?.resume();
          yield chunk;
        } else if (this.failure) {
          throw this.failure;
        } else if (this.ended) {
          return;
        } else {
          await new Promise<void>((resolve) => {
            this.wake = resolve;
          });
        }
      }
    } finally {
      this.close();
    }
  }

  private signal(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  private end(): void {
    if (this.ended) return;
    this.ended = true;
    this.flush();
    this.signal();
    this.socket?.destroy();
  }

  private close(): void {
    this.ended = true;
    this.queue.length = 0;
    this.socket?.destroy();
    this.signal();
  }

  private finish(): void {
    if (this.ended) return;
    if (!this.body) {
      this.abort(new Http1Error("the server closed the connection before answering", "ECONNRESET"));
      return;
    }
    if (this.mode.kind === "close") {
      this.end();
      return;
    }
    const left = this.mode.kind === "length" ? ` with ${this.mode.left} bytes of the body missing` : "";
    this.abort(new Http1Error(`the server closed the connection mid-body${left}`, "ECONNRESET"));
  }

  /** Ends with an error, after the consumer has had every byte that arrived before it. */
  private abort(err: Error): void {
    if (this.ended) return;
    this.flush();
    this.ended = true;
    this.failure = err;
    if (!this.body) this.reject(err);
    this.socket?.destroy();
    this.signal();
  }
}

function parseHead(text: string): { statusCode: number; headers: IncomingHttpHeaders } {
  const [statusLine = "", ...lines] = text.split("\r\n");
  const status = /^HTTP\/1\.[01] (\d{3})(?: |$)/.exec(statusLine);
  if (!status)
    throw new Http1Error(`not an HTTP/1.x response: ${JSON.stringify(statusLine.slice(0, 80))}`, "EPROTO");
  const headers: IncomingHttpHeaders = {};
  for (const line of lines) {
    const colon = line.indexOf(":");
    if (colon <= 0)
      throw new Http1Error(`malformed response header: ${JSON.stringify(line.slice(0, 80))}`, "EPROTO");
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    const previous = headers[name];
    if (name === "set-cookie") headers[name] = [...((previous as string[] | undefined) ?? []), value];
    else headers[name] = previous === undefined ? value : `${previous}, ${value}`;
  }
  return { statusCode: Number(status[1]), headers };
}

function bodyMode(statusCode: number, headers: IncomingHttpHeaders): BodyMode {
  if (statusCode === 204 || statusCode === 304) return { kind: "none" };
  const encoding = String(headers["transfer-encoding"] ?? "").toLowerCase();
  if (encoding) {
    if (encoding !== "chunked") throw new Http1Error(`unsupported transfer-encoding ${encoding}`, "EPROTO");
    return { kind: "chunked" };
  }
  const length = headers["content-length"];
  if (length === undefined) return { kind: "close" };
  if (!/^\d+$/.test(length))
    throw new Http1Error(`invalid content-length ${JSON.stringify(length)}`, "EPROTO");
  const left = Number(length);
  return left === 0 ? { kind: "none" } : { kind: "length", left };
}

/**
 * `Transfer-Encoding: chunked`, decoded in place: data bytes are moved left over the framing, so the output never
 * overtakes the input. Framing split across reads is kept in a few bytes of state.
 */
export class ChunkedDecoder {
  done = false;
  /** Data bytes left in the current chunk. */
  private left = 0;
  /** Where the decoder is outside chunk data. */
  private state: "size" | "data-end" | "trailer" = "size";
  private line = "";

  /** Decodes buffer[from, to) in place; returns how many data bytes now start at `from`. */
  decode(buffer: Buffer, from: number, to: number): number {
    let out = from;
    let i = from;
    while (i < to && !this.done) {
      if (this.left > 0) {
        const take = Math.min(this.left, to - i);
        if (out !== i) buffer.copyWithin(out, i, i + take);
        out += take;
        i += take;
        this.left -= take;
        if (this.left === 0) this.state = "data-end";
        continue;
      }
      const byte = buffer[i++] as number;
      if (byte !== 0x0a) {
        if (byte !== 0x0d) this.line += String.fromCharCode(byte);
        if (this.line.length > 1024) throw new Http1Error("chunk framing line too long", "EPROTO");
        continue;
      }
      const line = this.line;
      this.line = "";
      if (this.state === "data-end") {
        if (line !== "") throw new Http1Error("missing CRLF after chunk data", "EPROTO");
        this.state = "size";
      } else if (this.state === "size") {
        const size = /^([0-9a-fA-F]{1,12})(?:;.*)?$/.exec(line.trim());
        if (!size)
          throw new Http1Error(`invalid chunk size line ${JSON.stringify(line.slice(0, 40))}`, "EPROTO");
        this.left = Number.parseInt(size[1] as string, 16);
        if (this.left === 0) this.state = "trailer";
      } else if (line === "") {
        this.done = true;
      }
    }
    return out - from;
  }
}

function isIp(host: string): boolean {
  return /^[\d.]+$/.test(host) || host.includes(":");
}

function abortReason(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new Error("aborted");
}
