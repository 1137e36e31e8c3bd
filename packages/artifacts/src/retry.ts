import { setTimeout as delay } from "node:timers/promises";
import { ArtifactsError, redactUrl } from "./errors.js";
import { headerValue, StallError } from "./http.js";

export interface RetryOptions {
  /** Attempts after the first one for network errors, 5xx answers and rate limits. Default 5. */
  retries?: number;
  /** Base of the exponential backoff. Default 1000 ms. */
  retryDelayMs?: number;
  /** Longest wait accepted for a rate limit before giving up with RATE_LIMITED. Default 120 000 ms. */
  maxRateLimitWaitMs?: number;
  /** Human-readable notices (waits, restarts, skipped items). */
  onMessage?: (message: string) => void;
  signal?: AbortSignal;
}

/** Thrown inside a retried operation to ask for another attempt; any other error ends the loop. */
export class RetryableError extends Error {
  constructor(
    message: string,
    /** Overrides the backoff (rate limits say how long to wait). */
    readonly delayMs?: number,
    /** What the final error is called if this turns out to be the last attempt. */
    readonly finalCode: "NETWORK" | "STALLED" | "RATE_LIMITED" = "NETWORK",
  ) {
    super(message);
  }
}

const MAX_BACKOFF_MS = 30_000;

/**
 * Statuses with which storage behind a redirect refuses a signed link (it expired, within about a minute for
 * artifact zips): asking the API again gives a fresh one.
 */
export const LINK_REFUSED: ReadonlySet<number> = new Set([400, 401, 403, 404, 410]);

export function abortedError(signal: AbortSignal | undefined): ArtifactsError {
  return new ArtifactsError("ABORTED", "The operation was cancelled.", { cause: signal?.reason });
}

/**
 * Runs `attempt` until it succeeds, throws a non-retryable error, or the retries are used up.
 * ArtifactsError is final (a decision already made); every other error is treated as a transient network failure.
 */
export async function retrying<T>(
  what: string,
  opts: RetryOptions,
  attempt: (n: number) => Promise<T>,
): Promise<T> {
  for (let n = 0; ; n++) {
    if (opts.signal?.aborted) throw abortedError(opts.signal);
    try {
      return await attempt(n);
    } catch (err) {
      await afterFailure(what, err, n + 1, opts);
    }
  }
}

/**
 * What follows the `failures`-th failure in a row: a final error thrown (ArtifactsError, aborted, retries used up),
 * or a notice and the backoff wait, after which the caller tries again.
 */
export async function afterFailure(
  what: string,
  err: unknown,
  failures: number,
  opts: RetryOptions,
): Promise<void> {
  if (opts.signal?.aborted) throw abortedError(opts.signal);
  if (err instanceof ArtifactsError) throw err;
  const failure =
    err instanceof RetryableError
      ? err
      : new RetryableError(describeNetworkError(err), undefined, isStall(err) ? "STALLED" : "NETWORK");
  const retries = opts.retries ?? 5;
  if (failures > retries) {
    const advice =
      failure.finalCode === "RATE_LIMITED"
        ? "Wait a while (or set GH_TOKEN for a higher limit) and run the command again."
        : "Check the network connection and run the command again; a download resumes where it stopped.";
    throw new ArtifactsError(
      failure.finalCode,
      `${what} failed after ${failures} attempts: ${failure.message}. ${advice}`,
      { cause: err },
    );
  }
  // Full jitter keeps several clients that failed together from retrying in lockstep.
  const base = opts.retryDelayMs ?? 1000;
  const wait =
    failure.delayMs ?? Math.min(MAX_BACKOFF_MS, base * 2 ** (failures - 1)) * (0.5 + Math.random() / 2);
  opts.onMessage?.(
    `${what}: ${failure.message}; retrying in ${formatWait(wait)} (attempt ${failures + 1} of ${retries + 1})`,
  );
  try {
    await delay(wait, undefined, { signal: opts.signal });
  } catch {
    throw abortedError(opts.signal);
  }
}

export function describeNetworkError(err: unknown): string {
  const e = err as { code?: string; message?: string } | undefined;
  if (isStall(err)) return `the server stopped sending data (${e?.message})`;
  const code = e?.code ? ` (${e.code})` : "";
  return `${e?.message ?? String(err)}${code}`;
}

export function isStall(err: unknown): boolean {
  return err instanceof StallError;
}

export function formatWait(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 120_000) return `${Math.round(ms / 1000)} s`;
  return `${Math.round(ms / 60_000)} min`;
}

type Headers = Record<string, string | string[] | undefined>;

/**
 * How long a rate-limited answer asks us to wait, or undefined when the answer is not a rate limit.
 * GitHub signals limits with 403 or 429 plus `retry-after` or `x-ratelimit-remaining: 0` and `x-ratelimit-reset`.
 */
export function rateLimitWaitMs(status: number, headers: Headers, now = Date.now()): number | undefined {
  if (status !== 429 && status !== 403) return undefined;
  const retryAfter = headerValue(headers, "retry-after");
  if (retryAfter !== undefined) {
    const seconds = Number(retryAfter);
    if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
    const at = Date.parse(retryAfter);
    if (Number.isFinite(at)) return Math.max(0, at - now);
  }
  const remaining = headerValue(headers, "x-ratelimit-remaining");
  const reset = Number(headerValue(headers, "x-ratelimit-reset"));
  if (remaining === "0" && Number.isFinite(reset)) return Math.max(0, reset * 1000 - now) + 1000;
  if (status === 429) return 60_000;
  return undefined;
}

/** Turns a rate-limited answer into a wait (RetryableError) or, past the cap, a final error that says what to do. */
export function rateLimitDecision(
  waitMs: number,
  headers: Headers,
  host: string,
  opts: RetryOptions,
  hasToken: boolean,
): RetryableError {
  const cap = opts.maxRateLimitWaitMs ?? 120_000;
  if (waitMs > cap) {
    const reset = Number(headerValue(headers, "x-ratelimit-reset"));
    const when = Number.isFinite(reset)
      ? `it resets at ${new Date(reset * 1000).toISOString()}`
      : `the server asked to wait ${formatWait(waitMs)}`;
    const hint = hasToken
      ? "Wait and run the command again."
      : "Set GH_TOKEN (or run `gh auth login`) to get 5,000 requests an hour instead of 60, or wait and run the command again.";
    throw new ArtifactsError("RATE_LIMITED", `Rate limited by ${host}: ${when}. ${hint}`);
  }
  return new RetryableError(`rate limited by ${host}`, waitMs, "RATE_LIMITED");
}

export interface FailureContext {
  /** What was being fetched, for the message. */
  what: string;
  url: string;
  hasToken: boolean;
  /** The answer came from another origin after a redirect (object storage with an expiring signed URL). */
  crossOrigin: boolean;
}

/**
 * Classifies an unsuccessful HTTP answer: RetryableError for what another attempt can fix, ArtifactsError otherwise.
 */
export function failureFor(
  status: number,
  headers: Headers,
  ctx: FailureContext,
  opts: RetryOptions,
  githubMessage?: string,
): Error {
  const url = redactUrl(ctx.url);
  const host = safeHost(ctx.url);
  const wait = rateLimitWaitMs(status, headers);
  if (wait !== undefined) return rateLimitDecision(wait, headers, host, opts, ctx.hasToken);
  if (status >= 500) return new RetryableError(`${host} answered ${status}`);
  // The next attempt asks the API for a fresh link.
  if (ctx.crossOrigin && LINK_REFUSED.has(status)) {
    return new RetryableError(
      `storage at ${host} refused the download link (${status}), asking for a new one`,
    );
  }
  const detail = githubMessage ? ` (${githubMessage})` : "";
  if (status === 401) {
    return ctx.hasToken
      ? new ArtifactsError(
          "BAD_TOKEN",
          `${host} rejected the GitHub token${detail} while fetching ${ctx.what}. Check GH_TOKEN / GITHUB_TOKEN or run \`gh auth login\` again.`,
          { status, url },
        )
      : new ArtifactsError(
          "MISSING_TOKEN",
          `${ctx.what} needs a GitHub token. Set GH_TOKEN (or GITHUB_TOKEN), or run \`gh auth login\`.`,
          { status, url },
        );
  }
  if (status === 403 || status === 404) {
    const hint = ctx.hasToken
      ? "Check the repository name and that your token can read it."
      : "Check the repository name; for a private repository set GH_TOKEN or run `gh auth login`.";
    return new ArtifactsError(
      "NOT_FOUND",
      `${ctx.what} was not found at ${url} (${status})${detail}. ${hint}`,
      {
        status,
        url,
      },
    );
  }
  return new ArtifactsError("HTTP_ERROR", `${host} answered ${status} for ${ctx.what}${detail} (${url}).`, {
    status,
    url,
  });
}

function safeHost(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return "the server";
  }
}
