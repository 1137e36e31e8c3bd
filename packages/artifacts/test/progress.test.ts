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
const step = (bytesDone: number, done = false, connections = 8): Progress => ({
  label: "disk.qcow2",
  bytesDone,
  bytesTotal: 100 * MiB,
  bytesPerSecond: 10 * MiB,
  etaSeconds: (100 * MiB - bytesDone) / (10 * MiB),
  ...(done ? {} : { connections }),
  done,
});

describe("createProgressRenderer", () => {
  it("redraws one line on a terminal with the bar, total rate, ETA and connections, and ends it with a newline", () => {
    const out = new Capture(true);
    let now = 0;
    const render = createProgressRenderer(out, { now: () => now });
    render(step(0, false, 1));
    now = 10;
    render(step(MiB)); // inside the throttle window
    now = 200;
    render(step(50 * MiB));
    now = 210;
    render(step(100 * MiB, true));
    expect(out.chunks).toHaveLength(3);
    expect(out.chunks[0]).toMatch(/ETA 0:10 \(1 connection\)$/);
    expect(out.chunks[1]).toMatch(
      /^\rdisk\.qcow2 \[#+-+\] 50% 50\.0 MiB\/100\.0 MiB 10\.0 MiB\/s ETA 0:05 \(8 connections\)$/,
    );
    // One line: every write goes back to its start, and only the last one moves on.
    expect(out.chunks.every((c) => c.startsWith("\r"))).toBe(true);
    expect(out.chunks.join("").match(/\n/g)).toHaveLength(1);
    expect(out.chunks[2]).toMatch(/100% .*\n$/);
    expect(out.chunks.every((c) => c.length <= 101)).toBe(true);
  });

  it("keeps the numbers on a narrow terminal: the bar goes first, then the label is shortened", () => {
    const line = (columns: number, label = "disk.qcow2") => {
      const out = new Capture(true, columns);
      createProgressRenderer(out)({ ...step(50 * MiB), label });
      return out.chunks[0]!.slice(1);
    };
    expect(line(120)).toContain("[");
    const narrow = line(70);
    expect(narrow).toBe("disk.qcow2 50% 50.0 MiB/100.0 MiB 10.0 MiB/s ETA 0:05 (8 connections)");
    const long = line(70, "stack-emulator-amd64.qcow2.zst");
    expect(long.length).toBeLessThanOrEqual(69);
    expect(long).toMatch(/^stack-e\S*\u2026 50% .* ETA 0:05 \(8 connections\)$/);
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

  it("prints a few plain lines when not a terminal: the first, each quarter, the last", () => {
    const out = new Capture(false);
    let now = 0;
    const render = createProgressRenderer(out, { now: () => now });
    for (let i = 0; i <= 100; i++) {
      now = i * 100;
      render(step(i * MiB));
    }
    render(step(100 * MiB, true));
    expect(out.chunks.some((c) => c.includes("\r"))).toBe(false);
    expect(out.chunks).toEqual([
      "disk.qcow2: 0% 0 B/100.0 MiB 10.0 MiB/s ETA 0:10 (8 connections)\n",
      expect.stringMatching(/^disk\.qcow2: 25% .* ETA 0:08 \(8 connections\)\n$/),
      expect.stringMatching(/^disk\.qcow2: 50% /),
      expect.stringMatching(/^disk\.qcow2: 75% /),
      "disk.qcow2: 100% 100.0 MiB/100.0 MiB done\n",
    ]);
  });

  it("says something at least every plainIntervalMs when a download crawls", () => {
    const out = new Capture(false);
    let now = 0;
    const render = createProgressRenderer(out, { now: () => now, plainIntervalMs: 60_000 });
    for (let s = 0; s <= 180; s++) {
      now = s * 1000;
      render(step(s * 0.1 * MiB));
    }
    expect(out.chunks.map((c) => c.split(" ")[1])).toEqual(["0%", "6%", "12%", "18%"]);
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

  it("reports the connections at work, and the renderer shows them", () => {
    const clock = { now: 200 };
    const { tracker, events } = tracked(clock);
    tracker.set(MiB);
    tracker.setConnections(6);
    clock.now = 1000;
    tracker.set(9 * MiB);
    expect(events.map((p) => p.connections)).toEqual([1, 6]);
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
