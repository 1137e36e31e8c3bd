import { type Dispatcher, request } from "undici";
import { ArtifactsError, redactUrl } from "./errors.js";

export interface FollowOptions {
  headers: Record<string, string>;
  /** Sent only to the origin of the first URL: object storage behind a redirect must never see the token. */
  credentials?: Record<string, string>;
  signal?: AbortSignal;
  /** undici's per-chunk body timeout doubles as the stall timeout. */
  stallTimeoutMs?: number;
  maxRedirects?: number;
}

export interface FollowedResponse {
  statusCode: number;
  headers: Record<string, string | string[] | undefined>;
  body: Dispatcher.ResponseData["body"];
  /** The URL that produced this answer, after redirects. */
  url: string;
  /** True when a redirect moved the request to an origin other than the first one. */
  crossOrigin: boolean;
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
    const res = await request(current, {
      method: "GET",
      headers: sameOrigin && opts.credentials ? { ...opts.headers, ...opts.credentials } : opts.headers,
      signal: opts.signal,
      headersTimeout: opts.stallTimeoutMs,
      bodyTimeout: opts.stallTimeoutMs,
    });
    const location = res.headers.location;
    if (!REDIRECTS.has(res.statusCode) || typeof location !== "string") {
      return {
        statusCode: res.statusCode,
        headers: res.headers,
        body: res.body,
        url: current,
        crossOrigin: !sameOrigin,
      };
    }
    await res.body.dump();
    if (hop >= maxRedirects) {
      throw new ArtifactsError("HTTP_ERROR", `Too many redirects starting at ${redactUrl(url)}.`, {
        url: redactUrl(url),
      });
    }
    current = new URL(location, current).toString();
  }
}

export function headerValue(headers: FollowedResponse["headers"], name: string): string | undefined {
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
