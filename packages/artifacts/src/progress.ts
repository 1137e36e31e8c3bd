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
  /** Connections fetching at the moment; absent once done. */
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
    if (!done) p.connections = this.connections;
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
  /**
   * When the stream is not a terminal: the longest silence between plain lines, for a download too slow to cross
   * the next quarter soon. Default 60 000 ms.
   */
  plainIntervalMs?: number;
  /** Minimum time between redraws on a terminal. Default 100 ms. */
  ttyIntervalMs?: number;
  now?: () => number;
}

/** What a renderer writes to: a process stream, or anything that takes text and says whether it is a terminal. */
export interface ProgressStream {
  write(text: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

/** A Progress listener; `end()` finishes a bar left open by a transfer that failed, before an error is printed. */
export type ProgressRenderer = ((p: Progress) => void) & { end(): void };

/** Narrower than this, a bar says too little to be worth its room: the numbers get the line. */
const MIN_BAR = 10;
const MAX_BAR = 30;

/**
 * A Progress listener for a CLI. On a terminal, one line redrawn in place: a bar, the bytes, the total rate, the
 * ETA and the connections at work. Otherwise (a log, CI output) a few plain lines without carriage returns: the
 * first, one at each quarter, the last, and one after `plainIntervalMs` of silence.
 */
export function createProgressRenderer(stream: ProgressStream, opts: RendererOptions = {}): ProgressRenderer {
  const now = opts.now ?? Date.now;
  const tty = stream.isTTY === true;
  const ttyInterval = opts.ttyIntervalMs ?? 100;
  const plainInterval = opts.plainIntervalMs ?? 60_000;
  let last = Number.NEGATIVE_INFINITY;
  /** The quarter of the file the last plain line was in; -1 before the first. */
  let quarter = -1;
  /** Width of the bar currently drawn on the terminal line; 0 when no bar is open. */
  let openWidth = 0;
  const plain = (p: Progress, t: number) => {
    // 25, 50 and 75 % each get a line; 100 % is the last line's.
    const q = p.bytesTotal ? Math.min(3, Math.floor((p.bytesDone / p.bytesTotal) * 4)) : 0;
    if (!p.done && q <= quarter && t - last < plainInterval) return;
    last = t;
    quarter = Math.max(quarter, q);
    stream.write(`${p.label}: ${describe(p)}${p.done ? " done" : ""}\n`);
  };
  const redraw = (p: Progress, t: number) => {
    if (!p.done && t - last < ttyInterval) return;
    last = t;
    const line = fit(p, (stream.columns ?? 80) - 1);
    // Pad over the previous, possibly longer, line instead of relying on terminal clear codes.
    stream.write(`\r${line.padEnd(openWidth)}${p.done ? "\n" : ""}`);
    openWidth = p.done ? 0 : line.length;
  };
  const render = (p: Progress) => (tty ? redraw(p, now()) : plain(p, now()));
  return Object.assign(render, {
    end: () => {
      if (openWidth > 0) stream.write("\n");
      openWidth = 0;
    },
  });
}

/**
 * The terminal line in `width` columns: the numbers come first, so on a narrow terminal the bar shrinks, then
 * goes, then the label is shortened.
 */
function fit(p: Progress, width: number): string {
  const stats = describe(p);
  const fraction = p.bytesTotal ? Math.min(1, p.bytesDone / p.bytesTotal) : undefined;
  const barWidth = Math.min(MAX_BAR, width - p.label.length - stats.length - 4);
  if (fraction !== undefined && barWidth >= MIN_BAR) {
    const bar = "#".repeat(Math.round(fraction * barWidth)).padEnd(barWidth, "-");
    return `${p.label} [${bar}] ${stats}`;
  }
  const room = width - stats.length - 1;
  if (p.label.length <= room) return `${p.label} ${stats}`;
  if (room < 4) return stats.slice(0, width);
  return `${p.label.slice(0, room - 1)}… ${stats}`;
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
  if (!p.done && p.connections) parts.push(`(${p.connections} connection${p.connections === 1 ? "" : "s"})`);
  return parts.join(" ");
}
