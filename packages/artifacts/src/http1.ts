import type { IncomingHttpHeaders } from "node:http";
import { connect as connectTcp, type OnReadOpts, type Socket } from "node:net";
import { type ConnectionOptions, connect as connectTls } from "node:tls";
import { ArtifactsError, redactUrl } from "./errors.js";
import { release, retain, SLAB_BYTES, takeSlab } from "./slabs.js";

/**
 * HTTP/1.1 GETs with the body read straight from the socket into 1 MiB buffers, on connections kept alive
 * between requests, directly or through a forward proxy.
 *
 * Why not node:http: it allocates a 64 KiB buffer per socket read and runs every one through the parser and a
 * stream; at a gigabyte that is 16 000 allocations and events, 1-2 CPU-seconds per GiB on a small machine, several
 * times what the same bytes cost curl. Here the socket reads (`onread`) land in the buffer that is handed on, so a
 * GiB is about a thousand chunks and no copy. Why not undici: see the README (an uncatchable assertion in the
 * version that supports Node 20).
 */

/** A read gets at least this much room; a fuller buffer is handed on first. */
const MIN_READ_BYTES = 64 << 10;
/**
 * Bytes wait no longer than this for their buffer to fill: on a slow connection a megabyte takes a while, and the
 * consumer (progress, the ramp-up's throughput measurements, the hash) would see it in lumps.
 */
const MAX_HOLD_MS = 20;
/** The socket pauses while this much body waits for the consumer. */
const MAX_QUEUED_BYTES = 8 * SLAB_BYTES;
/** A response head (status line and headers) longer than this is refused. */
const MAX_HEAD_BYTES = 64 << 10;
/** An unused kept-alive connection is closed after this long; servers drop theirs after 5 to 60 s anyway. */
const IDLE_MS = 10_000;
/** Idle connections kept per origin: enough for every connection of a segmented download. */
const MAX_IDLE = 16;

export interface Http1Options {
  signal?: AbortSignal;
  /** The request fails after this long without traffic on the connection (connect, head or body). */
  stallTimeoutMs?: number;
  /** Makes the socket's errors for a quiet connection; defaults to a plain Error. */
  stallError?: (ms: number) => Error;
}

export interface ConnectOptions {
  /** Extra trusted CA certificates (PEM) for https, on top of Node's. */
  ca?: string | Buffer;
  /** A forward proxy (http:// or https://) to reach the target through: CONNECT for https targets. */
  proxy?: URL;
}

/**
 * A response body: iterate it for its bytes (every byte received is yielded before an error is thrown, so a
 * download can resume after them), or destroy it to close the connection. The chunks are pieces of shared slabs
 * (slabs.ts): a consumer may `release()` each when done with it, so that its slab is reused.
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

/** One GET on a connection of its own, closed after the answer. */
export function http1Get(
  url: URL,
  headers: Record<string, string>,
  opts: Http1Options & ConnectOptions = {},
): Promise<Http1Response> {
  return new Connection(url, opts).request(url, headers, opts, false);
}

/**
 * Keeps connections alive between requests, per origin and proxy: a segmented download asks for a range after
 * range, and a new TLS handshake for each would cost round trips. Idle connections do not keep the process alive.
 */
export class Http1Agent {
  private readonly idle = new Map<string, Connection[]>();
  private closed = false;

  constructor(
    private readonly opts: { ca?: string | Buffer; proxyFor?: (url: URL) => URL | undefined } = {},
  ) {}

  async get(url: URL, headers: Record<string, string>, opts: Http1Options = {}): Promise<Http1Response> {
    const proxy = this.opts.proxyFor?.(url);
    const key = `${proxy?.href ?? "direct"} ${url.protocol}//${url.host}`;
    for (;;) {
      const reused = this.idle.get(key)?.pop();
      const conn =
        reused ??
        new Connection(url, { ...(this.opts.ca ? { ca: this.opts.ca } : {}), ...(proxy ? { proxy } : {}) });
      conn.onIdle = () => this.park(key, conn);
      try {
        return await conn.request(url, headers, opts, true);
      } catch (err) {
        // A kept-alive connection the server has closed in the meantime fails before any answer: use a new one.
        const code = (err as { code?: string }).code;
        if (reused && (code === "ECONNRESET" || code === "EPIPE") && !opts.signal?.aborted) continue;
        throw err;
      }
    }
  }

  /** Closes the idle connections; those in use close when their answers end. */
  close(): void {
    this.closed = true;
    for (const list of this.idle.values()) for (const conn of list) conn.destroy();
    this.idle.clear();
  }

  private park(key: string, conn: Connection): void {
    const list = this.idle.get(key) ?? [];
    if (this.closed || list.length >= MAX_IDLE) {
      conn.destroy();
      return;
    }
    list.push(conn);
    this.idle.set(key, list);
    conn.onGone = () => {
      const at = list.indexOf(conn);
      if (at >= 0) list.splice(at, 1);
    };
  }
}

/** One connection: a socket, and the reader of the answer in progress, if any. */
class Connection {
  /** Called when an answer ended and the connection can carry another request. */
  onIdle: (() => void) | undefined;
  /** Called when an idle connection closed. */
  onGone: (() => void) | undefined;
  private socket: Socket | undefined;
  /** The connection to the proxy while a tunnel is being set up. */
  private dialing: Socket | undefined;
  private opened: Promise<Socket> | undefined;
  private reader: ResponseReader | undefined;
  /** Lent while no answer is expected: any byte landing there spoils the connection. */
  private readonly spare = Buffer.allocUnsafe(MIN_READ_BYTES);
  private lent: Buffer | undefined;
  private lender: ResponseReader | undefined;
  private stall: { ms: number; error: (ms: number) => Error } | undefined;
  private unwatch: (() => void) | undefined;
  private closed = false;
  /** Plain http through a proxy: requests name the whole URL, and carry the proxy's credentials. */
  private readonly viaProxy: boolean;
  private readonly proxyAuth: string | undefined;

  constructor(
    private readonly target: URL,
    private readonly opts: ConnectOptions,
  ) {
    const proxy = opts.proxy;
    this.viaProxy = proxy !== undefined && target.protocol === "http:";
    this.proxyAuth = proxy?.username
      ? `Basic ${Buffer.from(`${decodeURIComponent(proxy.username)}:${decodeURIComponent(proxy.password)}`).toString("base64")}`
      : undefined;
  }

  request(
    url: URL,
    headers: Record<string, string>,
    opts: Http1Options,
    keepAlive: boolean,
  ): Promise<Http1Response> {
    return new Promise((resolve, reject) => {
      // Built first: a header that would split the request is refused before any connection exists.
      const auth: Record<string, string> =
        this.viaProxy && this.proxyAuth ? { "proxy-authorization": this.proxyAuth } : {};
      const head = requestHead(url, { ...headers, ...auth }, this.viaProxy, keepAlive);
      const reader: ResponseReader = new ResponseReader(resolve, reject, keepAlive, {
        resume: () => this.socket?.resume(),
        done: (reusable) => this.finished(reader, reusable),
      });
      this.reader = reader;
      this.stall = opts.stallTimeoutMs
        ? { ms: opts.stallTimeoutMs, error: opts.stallError ?? ((ms) => new Error(`no data for ${ms} ms`)) }
        : undefined;
      this.watchSignal(opts.signal, reader);
      if (this.socket) {
        this.socket.ref();
        this.socket.resume();
        this.socket.setTimeout(this.stall?.ms ?? 0);
      }
      this.connect().then(
        (socket) => {
          if (this.reader === reader) socket.write(head);
        },
        (err: Error) => reader.abort(err),
      );
    });
  }

  destroy(error?: Error): void {
    this.closed = true;
    this.dialing?.destroy(error);
    this.socket?.destroy(error);
  }

  private watchSignal(signal: AbortSignal | undefined, reader: ResponseReader): void {
    if (!signal) return;
    const onAbort = () => reader.abort(abortReason(signal));
    if (signal.aborted) {
      queueMicrotask(onAbort);
      return;
    }
    signal.addEventListener("abort", onAbort, { once: true });
    this.unwatch = () => signal.removeEventListener("abort", onAbort);
  }

  private finished(reader: ResponseReader, reusable: boolean): void {
    if (this.reader !== reader) return;
    this.reader = undefined;
    this.unwatch?.();
    this.unwatch = undefined;
    const socket = this.socket;
    if (reusable && socket && !this.closed && this.onIdle) {
      socket.setTimeout(IDLE_MS);
      socket.unref();
      this.onIdle();
    } else {
      this.destroy();
    }
  }

  private connect(): Promise<Socket> {
    this.opened ??= this.open();
    return this.opened;
  }

  private async open(): Promise<Socket> {
    const { target, opts } = this;
    const onread: OnReadOpts = { buffer: () => this.readBuffer(), callback: (n) => this.received(n) };
    const proxy = opts.proxy;
    if (!proxy) return this.adopt(dial(target, onread, opts.ca));
    if (target.protocol === "http:") return this.adopt(dial(proxy, onread, opts.ca));
    const raw = dial(proxy, undefined, opts.ca);
    this.dialing = raw;
    if (this.closed) raw.destroy();
    if (this.stall) {
      const { ms, error } = this.stall;
      raw.setTimeout(ms, () => raw.destroy(error(ms)));
    }
    try {
      await tunnel(raw, target, proxy, this.proxyAuth);
    } catch (err) {
      // Refused, or spoilt by early data: nothing else will use or close this socket, nor listen for its errors.
      raw.destroy();
      throw err;
    } finally {
      raw.setTimeout(0);
      raw.removeAllListeners("timeout");
      this.dialing = undefined;
    }
    // Node takes `onread` only for sockets it creates itself, so TLS inside a tunnel delivers 'data' events.
    const tls = connectTls({ socket: raw, ...tlsOptions(target, opts.ca) });
    tls.on("data", (data: Buffer) => this.feed(data));
    return this.adopt(tls);
  }

  private adopt(socket: Socket): Socket {
    this.socket = socket;
    if (this.closed) socket.destroy();
    socket.setTimeout(this.stall?.ms ?? 0);
    socket.on("timeout", () => {
      if (!this.reader || !this.stall) socket.destroy();
      else socket.destroy(this.stall.error(this.stall.ms));
    });
    socket.on("error", (err) => this.reader?.abort(err));
    socket.on("end", () => this.reader?.finish());
    socket.on("close", () => {
      this.closed = true;
      if (this.reader) this.reader.finish();
      else this.onGone?.();
    });
    return socket;
  }

  /**
   * Where the next read lands. Node asks for it right after the previous read, so on a kept-alive connection the
   * first read of an answer may land in a buffer the previous answer's reader (or nobody) lent.
   */
  private readBuffer(): Buffer {
    this.lender = this.reader;
    this.lent = this.reader?.readBuffer() ?? this.spare;
    return this.lent;
  }

  /** `n` bytes arrived in the buffer last lent; false pauses the socket. */
  private received(n: number): boolean {
    if (this.reader && this.lender === this.reader) return this.reader.received(n);
    return this.copyIn(this.lent!.subarray(0, n));
  }

  /** Hands bytes that landed elsewhere to the current reader. */
  private copyIn(data: Buffer): boolean {
    let more = true;
    for (let at = 0; at < data.length; ) {
      const reader = this.reader;
      if (!reader) {
        // Bytes nobody asked for: the connection is in no known state.
        this.destroy();
        return true;
      }
      const room = reader.readBuffer();
      const n = Math.min(room.length, data.length - at);
      data.copy(room, 0, at, at + n);
      at += n;
      more = reader.received(n);
    }
    return more;
  }

  private feed(data: Buffer): void {
    if (!this.copyIn(data)) this.socket?.pause();
  }
}

function dial(to: URL, onread: OnReadOpts | undefined, ca: string | Buffer | undefined): Socket {
  const port = Number(to.port) || (to.protocol === "https:" ? 443 : 80);
  const host = bareHost(to);
  if (to.protocol !== "https:") return connectTcp({ host, port, ...(onread ? { onread } : {}) });
  // TLS sockets take `onread` too (the reads are the decrypted records); Node's types just do not say so.
  const tls: ConnectionOptions & { onread?: OnReadOpts } = {
    host,
    port,
    ...tlsOptions(to, ca),
    ...(onread ? { onread } : {}),
  };
  return connectTls(tls);
}

function tlsOptions(to: URL, ca: string | Buffer | undefined): ConnectionOptions {
  const host = bareHost(to);
  return {
    ALPNProtocols: ["http/1.1"],
    ...(isIp(host) ? {} : { servername: host }),
    ...(ca ? { ca } : {}),
  };
}

/** The host name without the brackets of an IPv6 literal. */
export function bareHost(url: URL): string {
  return url.hostname.replace(/^\[(.*)\]$/, "$1");
}

/** Asks an HTTP proxy for a tunnel to `target` (CONNECT); resolves once the proxy answers 200. */
function tunnel(socket: Socket, target: URL, proxy: URL, auth: string | undefined): Promise<void> {
  const authority = `${target.hostname}:${target.port || 443}`;
  return new Promise((resolve, reject) => {
    let head = Buffer.alloc(0);
    const done = (err?: Error) => {
      socket.off("data", onData);
      socket.off("error", done);
      socket.off("close", onClose);
      if (err) reject(err);
      else resolve();
    };
    const onClose = () => done(new Http1Error("the proxy closed the connection", "ECONNRESET"));
    const onData = (data: Buffer) => {
      head = Buffer.concat([head, data]);
      const end = head.indexOf("\r\n\r\n");
      if (end < 0) {
        if (head.length > MAX_HEAD_BYTES) done(new Http1Error("proxy answer head too long", "EPROTO"));
        return;
      }
      if (end + 4 < head.length) {
        done(new Http1Error("the proxy sent data before the tunnel was set up", "EPROTO"));
        return;
      }
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head.toString("latin1", 0, end))?.[1]);
      done(status === 200 ? undefined : proxyRefused(status, proxy, target));
    };
    socket.on("data", onData);
    socket.on("error", done);
    socket.on("close", onClose);
    const authLine = auth ? `proxy-authorization: ${auth}\r\n` : "";
    socket.write(`CONNECT ${authority} HTTP/1.1\r\nhost: ${authority}\r\n${authLine}\r\n`);
  });
}

function proxyRefused(status: number, proxy: URL, target: URL): Error {
  const where = redactUrl(proxy.href);
  if (status === 407) {
    return new ArtifactsError(
      "HTTP_ERROR",
      `The proxy ${where} wants credentials (407): put them in the proxy setting (http://user:password@host:port), or add ${target.hostname} to NO_PROXY.`,
      { status },
    );
  }
  // 502/503/504: the proxy could not reach the target, which another attempt may.
  return new Http1Error(
    `the proxy ${where} could not open a tunnel to ${target.host} (${Number.isNaN(status) ? "no HTTP answer" : status})`,
    "ECONNRESET",
  );
}

function requestHead(
  url: URL,
  headers: Record<string, string>,
  absolute: boolean,
  keepAlive: boolean,
): string {
  const target = absolute ? `${url.origin}${url.pathname}${url.search}` : `${url.pathname}${url.search}`;
  const lines = [`GET ${target} HTTP/1.1`, `host: ${url.host}`];
  for (const [name, value] of Object.entries(headers)) {
    const lower = name.toLowerCase();
    if (lower === "host" || lower === "connection") continue;
    if (/[\r\n]/.test(name) || /[\r\n]/.test(value)) throw new TypeError(`invalid header ${name}`);
    lines.push(`${name}: ${value}`);
  }
  // Without keep-alive the body ends at the latest when the server closes.
  if (!keepAlive) lines.push("connection: close");
  return `${lines.join("\r\n")}\r\n\r\n`;
}

type BodyMode = { kind: "length"; left: number } | { kind: "chunked" } | { kind: "close" } | { kind: "none" };

interface ReaderHooks {
  resume(): void;
  /** The answer is over: `reusable` when the connection may carry another request. */
  done(reusable: boolean): void;
}

/** Turns socket reads into a response: the head parsed from the first bytes, then the body as a queue. */
class ResponseReader {
  /** A slab being filled (the reader holds a reference to it), or the part of it still free. */
  private buffer = takeSlab();
  /** Bytes in `buffer` that are ready: the head while it arrives, then decoded body bytes. */
  private filled = 0;
  /** When the bytes now in `buffer` started to arrive. */
  private since = 0;
  private body: Body | undefined;
  private readonly queue: Buffer[] = [];
  private queuedBytes = 0;
  private failure: Error | undefined;
  private wake: (() => void) | undefined;
  private mode: BodyMode = { kind: "none" };
  private chunked = new ChunkedDecoder();
  private ended = false;
  /** The server sent more than the answer, or asked to close: the connection is not reused. */
  private spoilt = false;
  private slabDropped = false;

  constructor(
    private readonly resolve: (res: Http1Response) => void,
    private readonly reject: (err: Error) => void,
    private readonly keepAlive: boolean,
    private readonly hooks: ReaderHooks,
  ) {}

  readBuffer(): Buffer {
    if (this.body && this.filled > 0) {
      const now = performance.now();
      if (this.buffer.length - this.filled < MIN_READ_BYTES || now - this.since > MAX_HOLD_MS) this.flush();
    }
    return this.buffer.subarray(this.filled);
  }

  /** `n` bytes arrived at `filled`; false pauses the socket until the consumer asks for more. */
  received(n: number): boolean {
    if (n > 0 && !this.ended) {
      if (this.body) this.receivedBody(this.filled, n);
      else this.receivedHead(n);
    }
    return this.ended || this.queuedBytes < MAX_QUEUED_BYTES;
  }

  private receivedHead(n: number): void {
    const start = Math.max(0, this.filled - 3);
    this.filled += n;
    const end = this.buffer.subarray(0, this.filled).indexOf("\r\n\r\n", start, "latin1");
    if (end < 0) {
      if (this.filled > MAX_HEAD_BYTES) this.abort(new Http1Error("response head too long", "EPROTO"));
      return;
    }
    let head: ReturnType<typeof parseHead>;
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
    const connection = String(head.headers.connection ?? "").toLowerCase();
    if (head.version !== "1.1" || connection.split(/\s*,\s*/).includes("close")) this.spoilt = true;
    this.body = {
      [Symbol.asyncIterator]: () => this.chunks(),
      // The consumer gave up on the body: the connection has nothing else to carry.
      destroy: () => this.close(),
    };
    this.resolve({ statusCode: head.statusCode, headers: head.headers, body: this.body });
    if (this.mode.kind === "none") {
      if (rest > 0) this.spoilt = true;
      this.end();
    } else if (rest > 0) this.receivedBody(0, rest);
  }

  /** Body bytes at [at, at + n): decoded in place, handed on once the buffer is nearly full. */
  private receivedBody(at: number, n: number): void {
    if (at === 0) this.since = performance.now();
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
      if (this.chunked.done) {
        if (this.chunked.leftover) this.spoilt = true;
        this.end();
      }
    } else if (mode.kind === "length") {
      const take = Math.min(n, mode.left);
      if (take < n) this.spoilt = true;
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
    retain(ready);
    // The rest of the slab takes the next reads when enough is left: slow connections flush small pieces.
    if (this.buffer.length - this.filled >= MIN_READ_BYTES) {
      this.buffer = this.buffer.subarray(this.filled);
    } else {
      release(this.buffer);
      this.buffer = takeSlab();
    }
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
          if (this.queuedBytes < MAX_QUEUED_BYTES && !this.ended) this.hooks.resume();
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

  /** The whole answer arrived. */
  private end(): void {
    if (this.ended) return;
    this.ended = true;
    this.flush();
    this.dropSlab();
    this.signal();
    const delimited = this.mode.kind !== "close";
    this.hooks.done(this.keepAlive && delimited && !this.spoilt);
  }

  private close(): void {
    const wasEnded = this.ended;
    this.ended = true;
    this.queue.length = 0;
    this.dropSlab();
    this.signal();
    if (!wasEnded) this.hooks.done(false);
  }

  /** The reader reads no more: its slab goes back once the pieces cut from it are released. */
  private dropSlab(): void {
    if (this.slabDropped) return;
    this.slabDropped = true;
    release(this.buffer);
  }

  /** The connection ended: the end of a close-delimited body, or a cut. */
  finish(): void {
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
  abort(err: Error): void {
    if (this.ended) return;
    this.flush();
    this.dropSlab();
    this.ended = true;
    this.failure = err;
    if (!this.body) this.reject(err);
    this.signal();
    this.hooks.done(false);
  }
}

function parseHead(text: string): {
  version: string;
  statusCode: number;
  headers: IncomingHttpHeaders;
} {
  const [statusLine = "", ...lines] = text.split("\r\n");
  const status = /^HTTP\/(1\.[01]) (\d{3})(?: |$)/.exec(statusLine);
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
  return { version: status[1]!, statusCode: Number(status[2]), headers };
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
  /** Input followed the end of the body: a server that does not frame its answers. */
  leftover = false;
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
    if (this.done && i < to) this.leftover = true;
    return out - from;
  }
}

function isIp(host: string): boolean {
  return /^[\d.]+$/.test(host) || host.includes(":");
}

function abortReason(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new Error("aborted");
}
