import net from "node:net";
import { setTimeout as delay } from "node:timers/promises";

export type ConnectFailure = "timeout" | "failed" | "aborted";

/** Why `connectSocket` gave up. Clients turn it into their own error (QmpError, QgaError) with their own advice. */
export class ConnectError extends Error {
  override readonly name = "ConnectError";
  readonly reason: ConnectFailure;
  readonly path: string;
  /** The last connect attempt's errno code (`ENOENT`, `ECONNREFUSED`, ...), when there was an attempt. */
  readonly errno: string | undefined;

  constructor(reason: ConnectFailure, path: string, cause?: unknown) {
    const errno = (cause as NodeJS.ErrnoException | undefined)?.code;
    const detail =
      reason === "aborted"
        ? "aborted"
        : `${reason === "timeout" ? "no connection before the deadline" : "failed"}: ${(cause as Error).message}`;
    super(`connecting to ${path}: ${detail}`, cause === undefined ? undefined : { cause });
    this.reason = reason;
    this.path = path;
    this.errno = errno;
  }
}

/**
 * ENOENT: the server has not created the socket yet. ECONNREFUSED: a stale socket file, or nobody listening yet.
 * EAGAIN: the listener's backlog is full for now.
 */
const NOT_YET = new Set(["ENOENT", "ECONNREFUSED", "EAGAIN"]);
const FIRST_BACKOFF_MS = 2;
const MAX_BACKOFF_MS = 100;

function openOnce(path: string): Promise<net.Socket> {
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

/**
 * Connects to a unix socket, retrying while it does not exist or nobody listens yet (backing off from 2 to 100 ms)
 * until `deadline` (a `Date.now()` value) or `signal`. Any other error fails at once. Throws `ConnectError`.
 */
export async function connectSocket(
  path: string,
  opts: { deadline: number; signal?: AbortSignal | undefined },
): Promise<net.Socket> {
  const { deadline, signal } = opts;
  let backoff = FIRST_BACKOFF_MS;
  for (;;) {
    if (signal?.aborted) throw new ConnectError("aborted", path);
    try {
      return await openOnce(path);
    } catch (error) {
      if (!NOT_YET.has((error as NodeJS.ErrnoException).code ?? ""))
        throw new ConnectError("failed", path, error);
      const left = deadline - Date.now();
      if (left <= 0) throw new ConnectError("timeout", path, error);
      // An abort ends the sleep early; the loop's first line reports it.
      await delay(Math.min(backoff, left), undefined, signal ? { signal } : undefined).catch(() => undefined);
      backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
    }
  }
}
