import { request as httpRequest, type IncomingHttpHeaders, type IncomingMessage } from "node:http";
import { request as httpsRequest } from "node:https";
import { ArtifactsError, redactUrl } from "./errors.js";
import { type Body, http1Get } from "./http1.js";

export interface FollowOptions {
  headers: Record<string, string>;
  /** Sent only to the origin of the first URL: object storage behind a redirect must never see the token. */
  credentials?: Record<string, string>;
  signal?: AbortSignal;
  /** An attempt fails after this long without any traffic on the connection (connect, headers or body). */
  stallTimeoutMs?: number;
  maxRedirects?: number;
  /**
   * Read bodies with the lean HTTP/1.1 reader (http1.ts) instead of node:http: for large downloads, where
   * node:http's per-read cost dominates.
   */
  bulk?: boolean;
}

export interface FollowedResponse {
  statusCode: number;
  headers: IncomingHttpHeaders;
  body: Body;
  /** The URL that produced this answer, after redirects. */
  url: string;
  /** True when a redirect moved the request to an origin other than the first one. */
  crossOrigin: boolean;
}

/** Raised when a connection goes quiet for longer than the stall timeout. */
export class StallError extends Error {
  readonly code = "ESTALLED";
  constructor(ms: number) {
    super(`no data for ${ms} ms`);
  }
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

/**
 * GET with redirects followed by hand, so that which headers reach which origin is decided here and not by a
 * library default. Each call starts from the first URL, so an expiring redirect target is resolved afresh.
 *
 * node:http rather than undici: undici 7 (the last line for Node 20) throws an uncatchable AssertionError when a
 * server closes the connection while the body is paused by backpressure (nodejs/undici#5360, fixed in undici 8,
 * which needs Node 22). A slow disk under a fast `Connection: close` server is exactly a large download.
 */
export async function getFollowing(url: string, opts: FollowOptions): Promise<FollowedResponse> {
  const origin = new URL(url).origin;
  const maxRedirects = opts.maxRedirects ?? 5;
  let current = url;
  for (let hop = 0; ; hop++) {
    const sameOrigin = new URL(current).origin === origin;
    const headers = sameOrigin && opts.credentials ? { ...opts.headers, ...opts.credentials } : opts.headers;
    const target = httpUrl(current);
    const res = await (opts.bulk ? getBulk(target, headers, opts) : get(target, headers, opts));
    const location = res.headers.location;
    if (!REDIRECTS.has(res.statusCode) || typeof location !== "string") {
      return { ...res, url: current, crossOrigin: !sameOrigin };
    }
    // A bulk connection serves one request: closing it is cheaper than reading a body nobody wants.
    if (opts.bulk) res.body.destroy();
    else await discard(res.body);
    if (hop >= maxRedirects) {
      throw new ArtifactsError("HTTP_ERROR", `Too many redirects starting at ${redactUrl(url)}.`, {
        url: redactUrl(url),
      });
    }
    current = new URL(location, current).toString();
  }
}

type Answer = { statusCode: number; headers: IncomingHttpHeaders; body: Body };

function httpUrl(url: string): URL {
  const u = new URL(url);
  if (u.protocol !== "https:" && u.protocol !== "http:") {
    throw new ArtifactsError("INVALID_ARGUMENT", `Unsupported URL scheme in ${redactUrl(url)}.`);
  }
  return u;
}

function getBulk(u: URL, headers: Record<string, string>, opts: FollowOptions): Promise<Answer> {
  return http1Get(u, headers, {
    ...(opts.signal ? { signal: opts.signal } : {}),
    ...(opts.stallTimeoutMs ? { stallTimeoutMs: opts.stallTimeoutMs } : {}),
    stallError: (ms) => new StallError(ms),
  });
}

function get(u: URL, headers: Record<string, string>, opts: FollowOptions): Promise<Answer> {
  const send = u.protocol === "https:" ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    let response: IncomingMessage | undefined;
    const req = send(
      u,
      { method: "GET", headers, ...(opts.signal ? { signal: opts.signal } : {}) },
      (res) => {
        response = res;
        resolve({ statusCode: res.statusCode ?? 0, headers: res.headers, body: res });
      },
    );
    const stallMs = opts.stallTimeoutMs;
    // The socket timeout keeps running after the headers arrive, so it also catches a body that stops flowing;
    // the body is destroyed with the reason so that its reader sees a stall rather than a bare "aborted".
    if (stallMs) {
      req.setTimeout(stallMs, () => {
        const err = new StallError(stallMs);
        response?.destroy(err);
        req.destroy(err);
      });
    }
    req.on("error", reject);
    req.end();
  });
}

/** Reads a whole (small) body; beyond `maxBytes` the answer is refused rather than buffered. */
export async function readBody(res: Body, maxBytes = 64 << 20): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of res) {
    total += (chunk as Buffer).length;
    if (total > maxBytes) {
      res.destroy();
      throw new ArtifactsError(
        "HTTP_ERROR",
        `An answer larger than ${maxBytes} bytes was refused where a small one was expected.`,
      );
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

/** Drains an unwanted body so the connection can be reused; a failure there does not matter. */
export async function discard(res: Body): Promise<void> {
  try {
    for await (const _ of res) {
      // Drained for connection reuse only.
    }
  } catch {
    // The body was unwanted anyway.
  }
}

export function headerValue(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** The `rel="next"` target of a GitHub `Link` header. */
export function nextLink(link: string | undefined): string | undefined {
  if (!link) return undefined;
  for (const part of link.split(",")) {
    const m = /<([^>]+)>\s*;(.*)/.exec(part.trim());
    if (m && /\brel="?([^"]*\s)?next(\s[^"]*)?"?/.test(m[2]!)) return m[1];
  }
  return undefined;
}
