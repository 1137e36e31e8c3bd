import { QmpError } from "./errors.js";
import { guard } from "./protocol/deadline.js";

interface Pending {
  command: string;
  resolve: (value: unknown) => void;
  reject: (error: QmpError) => void;
}

export function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/** QEMU's `error` member of a reply, with defaults for what a misbehaving server leaves out. */
export function errorOf(message: Record<string, unknown>): { errorClass: string; desc: string } {
  const error = (isObject(message.error) ? message.error : {}) as { class?: unknown; desc?: unknown };
  return {
    errorClass: typeof error.class === "string" ? error.class : "GenericError",
    desc: typeof error.desc === "string" ? error.desc : "(no description)",
  };
}

/** The commands in flight on one connection, by id, each with its own deadline and abort signal. */
export class Requests {
  readonly #pending = new Map<string, Pending>();

  /** A promise for the reply to `id`; rejects with TIMEOUT or ABORTED, after which a late reply is dropped. */
  expect<T>(id: string, command: string, timeoutMs: number, signal: AbortSignal | undefined): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const stop = guard(timeoutMs, signal, (why) => {
        if (!this.#pending.delete(id)) return;
        reject(
          why === "timeout"
            ? new QmpError(
                "TIMEOUT",
                `QMP command ${command} got no reply within ${timeoutMs} ms; QEMU may be hung`,
                {
                  command,
                },
              )
            : new QmpError("ABORTED", `QMP command ${command} was aborted`, { command }),
        );
      });
      this.#pending.set(id, {
        command,
        resolve: (value) => {
          stop();
          resolve(value as T);
        },
        reject: (error) => {
          stop();
          reject(error);
        },
      });
    });
  }

  /** Settles the command a reply with an id answers; a reply to an unknown or abandoned id is dropped. */
  answer(id: string, message: Record<string, unknown>): void {
    const pending = this.#pending.get(id);
    if (!pending) return;
    this.#pending.delete(id);
    if ("return" in message) {
      pending.resolve(message.return);
      return;
    }
    const { errorClass, desc } = errorOf(message);
    pending.reject(
      new QmpError("COMMAND_FAILED", `QMP command ${pending.command} failed: ${errorClass}: ${desc}`, {
        errorClass,
        desc,
        command: pending.command,
      }),
    );
  }

  /** Rejects every command in flight with the reason the connection ended. */
  failAll(reason: QmpError): void {
    for (const [id, pending] of this.#pending) {
      this.#pending.delete(id);
      pending.reject(
        new QmpError(reason.code, `${reason.message} (while waiting for the reply to ${pending.command})`, {
          command: pending.command,
          errorClass: reason.errorClass,
          desc: reason.desc,
          cause: reason,
        }),
      );
    }
  }
}
