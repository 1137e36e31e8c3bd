import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { createProgressRenderer, formatBytes, formatDuration, type Progress } from "../src/index.js";
import { ProgressTracker } from "../src/progress.js";

class Capture extends Writable {
  chunks: string[] = [];
  constructor(
    readonly isTTY: boolean,
    readonly columns = 100,
  ) {
    super();
  }
  override _write(chunk: Buffer, _enc: string, cb: () => void): void {
    this.chunks.push(chunk.toString());
    cb();
  }
}

const MiB = 1024 * 1024;
const step = (bytesDone: number, done = false): Progress => ({
  label: "disk.qcow2",
  bytesDone,
  bytesTotal: 100 * MiB,
  bytesPerSecond: 10 * MiB,
  etaSeconds: (100 * MiB - bytesDone) / (10 * MiB),
  done,
});

describe("createProgressRenderer", () => {
  it("redraws one line with a bar on a terminal, throttled, and ends it with a newline", () => {
    const out = new Capture(true);
    let now = 0;
    const render = createProgressRenderer(out, { now: () => now });
    render(step(0));
    now = 10;
    render(step(MiB)); // inside the throttle window
    now = 200;
    render(step(50 * MiB));
    now = 210;
    render(step(100 * MiB, true));
    expect(out.chunks).toHaveLength(3);
    expect(out.chunks[1]).toMatch(/^\rdisk\.qcow2 \[#+-+\] 50% 50\.0 MiB\/100\.0 MiB 10\.0 MiB\/s ETA 0:05/);
    expect(out.chunks.every((c) => c.startsWith("\r"))).toBe(true);
    expect(out.chunks[2]).toMatch(/100% .*\n$/);
    expect(out.chunks.every((c) => c.length <= 101)).toBe(true);
  });

  it("ends a bar left open by a failed transfer, once", () => {
    const out = new Capture(true);
    const render = createProgressRenderer(out);
    render.end();
    expect(out.chunks).toEqual([]);
    render(step(10 * MiB));
    render.end();
    render.end();
    expect(out.chunks).toHaveLength(2);
    expect(out.chunks[1]).toBe("\n");
  });

  it("prints occasional plain lines when not a terminal", () => {
    const out = new Capture(false);
    let now = 0;
    const render = createProgressRenderer(out, { now: () => now, plainIntervalMs: 5000 });
    for (let i = 0; i <= 100; i++) {
      now = i * 100;
      render(step(i * MiB));
    }
    render(step(100 * MiB, true));
    expect(out.chunks.some((c) => c.includes("\r"))).toBe(false);
    expect(out.chunks).toEqual([
      expect.stringMatching(/^disk\.qcow2: 0% /),
      expect.stringMatching(/^disk\.qcow2: 50% /),
      expect.stringMatching(/^disk\.qcow2: 100% /),
      "disk.qcow2: 100% 100.0 MiB/100.0 MiB done\n",
    ]);
  });
});

/** A tracker of 100 MiB on a clock the test moves, and the events it emitted. */
function tracked(clock: { now: number }): { tracker: ProgressTracker; events: Progress[] } {
  const events: Progress[] = [];
  const tracker = new ProgressTracker(
    "x",
    (p) => events.push(p),
    () => clock.now,
  );
  tracker.setTotal(100 * MiB);
  return { tracker, events };
}

describe("ProgressTracker", () => {
  it("computes the rate over a recent window and an ETA", () => {
    const clock = { now: 0 };
    const { tracker, events } = tracked(clock);
    for (let s = 0; s <= 10; s++) {
      clock.now = s * 1000;
      tracker.set(s * 5 * MiB);
    }
    const last = events.at(-1)!;
    expect(last.bytesPerSecond).toBeCloseTo(5 * MiB, -3);
    expect(last.etaSeconds).toBeCloseTo(10, 0);
    tracker.finish();
    expect(events.at(-1)!.done).toBe(true);
  });

  it("reports the connections at work while there are several, and the renderer shows them", () => {
    const clock = { now: 200 };
    const { tracker, events } = tracked(clock);
    tracker.set(MiB);
    tracker.setConnections(6);
    clock.now = 1000;
    tracker.set(9 * MiB);
    expect(events.map((p) => p.connections)).toEqual([undefined, 6]);
    const out = new Capture(false);
    createProgressRenderer(out)(events[1]!);
    expect(out.chunks[0]).toMatch(/^x: 9% 9\.00 MiB\/100\.0 MiB 10\.0 MiB\/s ETA 0:09 \(6 connections\)\n$/);
  });

  it("formats sizes and durations", () => {
    expect(formatBytes(512)).toBe("512 B");
    expect(formatBytes(1536 * MiB)).toBe("1.50 GiB");
    expect(formatDuration(3725)).toBe("1:02:05");
    expect(formatDuration(65)).toBe("1:05");
  });
});
