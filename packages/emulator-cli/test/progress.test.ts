import { mkdtempSync, readFileSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { createProgressRenderer, type Progress } from "@stack/artifacts";
import { describe, expect, it } from "vitest";
import { createReporter } from "../src/core/report.js";

/** A stderr stand-in that records what was written, a terminal or not. */
class FakeStderr extends Writable {
  text = "";
  constructor(
    readonly isTTY: boolean,
    readonly columns = 100,
  ) {
    super();
  }
  override _write(chunk: Buffer, _enc: string, cb: () => void): void {
    this.text += chunk.toString();
    cb();
  }
}

/** The lines a terminal shows after `text`: carriage returns and line clears applied, colours dropped. */
function screen(text: string): string[] {
  const lines = [""];
  for (const token of text.replace(/\x1b\[[0-9;]*m/g, "").split(/(\r|\n|\x1b\[2K)/)) {
    if (token === "\n") lines.push("");
    else if (token === "\r" || token === "\x1b[2K") lines[lines.length - 1] = token === "\r" ? "\0" : "";
    else if (token) {
      const line = lines.at(-1)!;
      // After a carriage return, new text overwrites the old from column 0.
      lines[lines.length - 1] = line.startsWith("\0") ? token + line.slice(1 + token.length) : line + token;
    }
  }
  return lines.map((l) => l.replace(/^\0/, "").trimEnd());
}

const MiB = 1024 * 1024;
const at = (mib: number, connections: number, done = false): Progress => ({
  label: "stack-emulator-amd64.qcow2.zst",
  bytesDone: mib * MiB,
  bytesTotal: 64 * MiB,
  bytesPerSecond: 16 * MiB,
  etaSeconds: (64 - mib) / 16,
  ...(done ? {} : { connections }),
  done,
});

/** A download's progress through the reporter, as `pull` wires it, with a warning half-way. */
function pull(stream: FakeStderr, options: { redraw?: boolean; quiet?: boolean } = {}) {
  const report = createReporter({ stream: stream as unknown as NodeJS.WriteStream, ...options });
  report.step("fetching release-emulator-dev-latest-amd64 from stack-auth/stack-auth");
  const output = report.progressOutput();
  let now = 0;
  const render = output ? createProgressRenderer(output, { now: () => now }) : undefined;
  for (let mib = 0; mib <= 64; mib += 4) {
    now = mib * 1000;
    render?.(at(mib, Math.min(8, 1 + mib)));
    if (mib === 32) report.warn("storage refused the link; asking the API again");
  }
  render?.(at(64, 8, true));
  render?.end();
  report.info("downloaded stack-emulator-amd64.qcow2.zst");
  report.done();
}

describe("a download's progress on stderr", () => {
  it("stays one line on a terminal, with the total rate, ETA and connections; a warning goes above it", () => {
    const stderr = new FakeStderr(true);
    pull(stderr, { redraw: true });
    expect(screen(stderr.text)).toEqual([
      "warning: storage refused the link; asking the API again",
      expect.stringMatching(/^stack-emulator-amd64\.qcow2\.zst \[#{30}\] 100% 64\.0 MiB\/64\.0 MiB$/),
      "downloaded stack-emulator-amd64.qcow2.zst",
      "",
    ]);
    // Before the warning, every redraw went back to the start of the same line.
    const beforeWarning = stderr.text.slice(0, stderr.text.indexOf("warning:"));
    expect(beforeWarning).not.toContain("\n");
    expect(beforeWarning).toMatch(/32\.0 MiB\/64\.0 MiB 16\.0 MiB\/s ETA 0:02 \(8 connections\)/);
    expect(beforeWarning).toMatch(/ETA 0:04 \(1 connection\)/);
  });

  it("prints a few plain lines and no carriage return when stderr is not a terminal, or is CI's", () => {
    for (const stderr of [new FakeStderr(false), new FakeStderr(true)]) {
      pull(stderr, { redraw: !stderr.isTTY });
      expect(stderr.text).not.toMatch(/\r|\x1b/);
      const progress = stderr.text.split("\n").filter((l) => l.startsWith("stack-emulator-amd64"));
      expect(progress.map((l) => l.split(" ")[1])).toEqual(["0%", "25%", "50%", "75%", "100%"]);
      expect(progress[2]).toMatch(/ 16\.0 MiB\/s ETA 0:02 \(8 connections\)$/);
      expect(progress[4]).toMatch(/ done$/);
    }
  });

  it("prints no progress where the reporter is quiet (--json on a pipe)", () => {
    const stderr = new FakeStderr(false);
    pull(stderr, { quiet: true });
    expect(stderr.text).toBe("warning: storage refused the link; asking the API again\n");
  });
});

describe("the instance's log", () => {
  it("gets every message, in a file only its owner can read", () => {
    const log = join(mkdtempSync(join(tmpdir(), "se-log-")), "emulator.log");
    const report = createReporter({ stream: new FakeStderr(false) as unknown as NodeJS.WriteStream });
    report.logTo(log);
    report.warn("a warning");
    report.step("a step");
    expect(statSync(log).mode & 0o777).toBe(0o600);
    expect(readFileSync(log, "utf8")).toMatch(/WARN.*a warning/i);
  });
});
