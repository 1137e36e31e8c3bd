export type StopReason = "timeout" | "aborted";

/**
 * Arms a deadline and an abort listener; whichever fires first calls `onStop`, once, unless the returned disposer
 * ran before. `timeoutMs` undefined or `Infinity` sets no deadline.
 */
export function guard(
  timeoutMs: number | undefined,
  signal: AbortSignal | undefined,
  onStop: (why: StopReason) => void,
): () => void {
  let timer: NodeJS.Timeout | undefined;
  let active = true;
  const fire = (why: StopReason) => {
    if (!active) return;
    dispose();
    onStop(why);
  };
  const onAbort = () => fire("aborted");
  const dispose = () => {
    active = false;
    if (timer) clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
  };
  if (signal?.aborted) {
    // Deferred so the caller has finished registering what onStop undoes.
    queueMicrotask(onAbort);
    return dispose;
  }
  if (timeoutMs !== undefined && Number.isFinite(timeoutMs))
    timer = setTimeout(() => fire("timeout"), Math.max(0, timeoutMs));
  signal?.addEventListener("abort", onAbort, { once: true });
  return dispose;
}
