import { QmpError } from "./errors.js";
import { guard } from "./protocol/deadline.js";
import type { QmpEvent, WaitForEventOptions } from "./types.js";

type Listener = (event: QmpEvent) => void;

/**
 * The events of one connection, handed to iterators and waiters. Only events arriving after a subscription count;
 * when the connection ends, iterators finish and waiters reject with CLOSED.
 */
export class EventHub {
  readonly #listeners = new Set<Listener>();
  readonly #onEnd = new Set<(reason: QmpError) => void>();
  #ended: QmpError | undefined;

  dispatch(event: QmpEvent): void {
    for (const listener of [...this.#listeners]) listener(event);
  }

  end(reason: QmpError): void {
    if (this.#ended) return;
    this.#ended = reason;
    for (const listener of [...this.#onEnd]) listener(reason);
    this.#onEnd.clear();
    this.#listeners.clear();
  }

  /** Events (all, or those called `name`) queued until read; `return()` unsubscribes. */
  iterate(name?: string): AsyncIterableIterator<QmpEvent> {
    const queue: QmpEvent[] = [];
    let waiter: ((result: IteratorResult<QmpEvent>) => void) | undefined;
    let done = this.#ended !== undefined;
    const finish = () => {
      if (done) return;
      done = true;
      this.#listeners.delete(onEvent);
      this.#onEnd.delete(finish);
      waiter?.({ value: undefined, done: true });
      waiter = undefined;
    };
    const onEvent: Listener = (event) => {
      if (name !== undefined && event.event !== name) return;
      const w = waiter;
      waiter = undefined;
      if (w) w({ value: event, done: false });
      else queue.push(event);
    };
    if (!done) {
      this.#listeners.add(onEvent);
      this.#onEnd.add(finish);
    }
    const iterator: AsyncIterableIterator<QmpEvent> = {
      next: () => {
        const queued = queue.shift();
        if (queued) return Promise.resolve({ value: queued, done: false });
        if (done) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => {
          waiter = resolve;
        });
      },
      return: () => {
        finish();
        queue.length = 0;
        return Promise.resolve({ value: undefined, done: true });
      },
      [Symbol.asyncIterator]: () => iterator,
    };
    return iterator;
  }

  /** The next event called `name` that satisfies the predicate. */
  waitFor(name: string, opts: WaitForEventOptions = {}): Promise<QmpEvent> {
    return new Promise((resolve, reject) => {
      if (this.#ended) {
        reject(
          new QmpError("CLOSED", `cannot wait for ${name}: ${this.#ended.message}`, { cause: this.#ended }),
        );
        return;
      }
      const settle = (outcome: () => void) => {
        stop();
        this.#listeners.delete(onEvent);
        this.#onEnd.delete(onEnd);
        outcome();
      };
      const onEvent: Listener = (event) => {
        if (event.event !== name) return;
        let matches: boolean;
        try {
          matches = opts.predicate ? opts.predicate(event) : true;
        } catch (error) {
          settle(() => reject(error));
          return;
        }
        if (matches) settle(() => resolve(event));
      };
      const onEnd = (reason: QmpError) =>
        settle(() =>
          reject(
            new QmpError("CLOSED", `${reason.message} (while waiting for event ${name})`, { cause: reason }),
          ),
        );
      const stop = guard(opts.timeoutMs, opts.signal, (why) =>
        settle(() =>
          reject(
            why === "timeout"
              ? new QmpError("TIMEOUT", `QMP event ${name} did not arrive within ${opts.timeoutMs} ms`)
              : new QmpError("ABORTED", `waiting for QMP event ${name} was aborted`),
          ),
        ),
      );
      this.#listeners.add(onEvent);
      this.#onEnd.add(onEnd);
    });
  }
}
