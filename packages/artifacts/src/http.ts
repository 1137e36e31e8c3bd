import type { IncomingHttpHeaders } from "node:http";
import { ArtifactsError, redactUrl } from "./errors.js";
import type { Body, Http1Agent } from "./http1.js";

export interface FollowOptions {
  /** Connections: kept alive between requests, through the environment's proxy when there is one. */
  agent: Http1Agent;
  headers: Record<string, string>;
  /** Sent only to the origin of the first URL: object storage behind a redirect must never see the token. */
  credentials?: Record<string, string>;
  signal?: AbortSignal | undefined;
  /** An attempt fails after this long without any traffic on the connection (connect, headers or body). */
  stallTimeoutMs?: number;
  maxRedirects?: number;
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
 */
export async function getFollowing(url: string, opts: FollowOptions): Promise<FollowedResponse> {
  const origin = new URL(url).origin;
  const maxRedirects = opts.maxRedirects ?? 5;
  let current = url;
  for (let hop = 0; ; hop++) {
    const sameOrigin = new URL(current).origin === origin;
    const headers = sameOrigin && opts.credentials ? { ...opts.headers, ...opts.credentials } : opts.headers;
    const res = await get(current, headers, opts);
    const location = res.headers.location;
    if (!REDIRECTS.has(res.statusCode) || typeof location !== "string") {
      return { ...res, url: current, crossOrigin: !sameOrigin };
    }
    await discard(res.body);
    if (hop >= maxRedirects) {
      throw new ArtifactsError("HTTP_ERROR", `Too many redirects starting at ${redactUrl(url)}.`, {
        url: redactUrl(url),
      });
    }
    current = new URL(location, current).toString();
  }
}

/** One GET without following redirects. */
export function get(
  url: string,
  headers: Record<string, string>,
  opts: Omit<FollowOptions, "headers">,
): ReturnType<Http1Agent["get"]> {
  const u = new URL(url);
  if (u.protocol !== "https:" && u.protocol !== "http:") {
    throw new ArtifactsError("INVALID_ARGUMENT", `Unsupported URL scheme in ${redactUrl(url)}.`);
  }
  return opts.agent.get(u, headers, {
    ...(opts.signal ? { signal: opts.signal } : {}),
    ...(opts.stallTimeoutMs ? { stallTimeoutMs: opts.stallTimeoutMs } : {}),
    stallError: (ms) => new StallError(ms),
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

/** Drains an unwanted (small) body so the connection can be reused; a failure there does not matter. */
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
