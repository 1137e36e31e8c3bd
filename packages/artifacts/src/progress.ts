export interface Progress {
  /** What is being transferred (an asset or artifact name). */
  label: string;
  bytesDone: number;
  /** Unknown until the server says (no Content-Length). */
  bytesTotal?: number;
  /** Recent throughput, averaged over the last few seconds. */
  bytesPerSecond: number;
  /** Seconds left at the recent rate; undefined while the total or the rate is unknown. */
  etaSeconds?: number;
  /** Connections fetching at the moment, when there is more than one. */
  connections?: number;
  done: boolean;
}

const EMIT_INTERVAL_MS = 100;
const RATE_WINDOW_MS = 5000;

/** Turns byte counts into throttled Progress events with a windowed rate. */
export class ProgressTracker {
  private done = 0;
  private total: number | undefined;
  private connections = 1;
  private lastEmit = 0;
  private samples: { t: number; bytes: number }[] = [];

  constructor(
    private readonly label: string,
    private readonly listener: ((p: Progress) => void) | undefined,
    private readonly now: () => number = Date.now,
  ) {}

  setTotal(total: number | undefined): void {
    this.total = total;
  }

  setConnections(n: number): void {
    this.connections = n;
  }

  /** Moves the count (a restart from zero moves it back). */
  set(bytesDone: number): void {
    if (bytesDone < this.done) this.samples = [];
    this.done = bytesDone;
    if (!this.listener) return;
    const t = this.now();
    if (t - this.lastEmit >= EMIT_INTERVAL_MS) this.emit(t, false);
  }

  finish(): void {
    if (this.listener) this.emit(this.now(), true);
  }

  private emit(t: number, done: boolean): void {
    this.lastEmit = t;
    this.samples.push({ t, bytes: this.done });
    while (this.samples.length > 2 && t - this.samples[0]!.t > RATE_WINDOW_MS) this.samples.shift();
    const first = this.samples[0]!;
    const elapsed = (t - first.t) / 1000;
    const rate = elapsed > 0 ? Math.max(0, (this.done - first.bytes) / elapsed) : 0;
    const p: Progress = { label: this.label, bytesDone: this.done, bytesPerSecond: rate, done };
    if (this.connections > 1 && !done) p.connections = this.connections;
    if (this.total !== undefined) {
      p.bytesTotal = this.total;
      if (rate > 0) p.etaSeconds = Math.max(0, (this.total - this.done) / rate);
    }
    this.listener!(p);
  }
}

export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

export function formatDuration(seconds: number): string {
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}

export interface RendererOptions {
  /** Minimum time between lines when the stream is not a terminal. Default 5000 ms. */
  plainIntervalMs?: number;
  /** Minimum time between redraws on a terminal. Default 100 ms. */
  ttyIntervalMs?: number;
  now?: () => number;
}

/** A Progress listener; `end()` finishes a bar left open by a transfer that failed, before an error is printed. */
export type ProgressRenderer = ((p: Progress) => void) & { end(): void };

/**
 * A Progress listener for a CLI: a bar redrawn in place on a terminal, an occasional plain line otherwise
 * (logs and CI output must not fill up with carriage returns).
 */
export function createProgressRenderer(
  stream: NodeJS.WritableStream & { isTTY?: boolean; columns?: number },
  opts: RendererOptions = {},
): ProgressRenderer {
  const now = opts.now ?? Date.now;
  const tty = stream.isTTY === true;
  const interval = tty ? (opts.ttyIntervalMs ?? 100) : (opts.plainIntervalMs ?? 5000);
  let last = Number.NEGATIVE_INFINITY;
  /** Width of the bar currently drawn on the terminal line; 0 when no bar is open. */
  let openWidth = 0;
  const render = (p: Progress) => {
    const t = now();
    if (!p.done && t - last < interval) return;
    last = t;
    const stats = describe(p);
    if (!tty) {
      stream.write(`${p.label}: ${stats}${p.done ? " done" : ""}\n`);
      return;
    }
    const columns = stream.columns ?? 80;
    const fraction = p.bytesTotal ? Math.min(1, p.bytesDone / p.bytesTotal) : undefined;
    const barWidth = Math.max(10, Math.min(30, columns - stats.length - p.label.length - 6));
    const bar =
      fraction === undefined ? "" : `[${"#".repeat(Math.round(fraction * barWidth)).padEnd(barWidth, "-")}] `;
    let line = `${p.label} ${bar}${stats}`;
    if (line.length > columns - 1) line = line.slice(0, columns - 1);
    // Pad over the previous, possibly longer, line instead of relying on terminal clear codes.
    stream.write(`\r${line.padEnd(openWidth)}${p.done ? "\n" : ""}`);
    openWidth = p.done ? 0 : line.length;
  };
  return Object.assign(render, {
    end: () => {
      if (openWidth > 0) stream.write("\n");
      openWidth = 0;
    },
  });
}

function describe(p: Progress): string {
  const parts: string[] = [];
  if (p.bytesTotal) {
    const pct = Math.floor((Math.min(p.bytesDone, p.bytesTotal) / p.bytesTotal) * 100);
    parts.push(`${pct}%`, `${formatBytes(p.bytesDone)}/${formatBytes(p.bytesTotal)}`);
  } else {
    parts.push(formatBytes(p.bytesDone));
  }
  if (!p.done && p.bytesPerSecond > 0) parts.push(`${formatBytes(p.bytesPerSecond)}/s`);
  if (!p.done && p.etaSeconds !== undefined) parts.push(`ETA ${formatDuration(p.etaSeconds)}`);
  if (!p.done && p.connections) parts.push(`(${p.connections} connections)`);
  return parts.join(" ");
}
