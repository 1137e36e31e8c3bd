import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { encodeMessage, LineDecoder } from "../src/framing.js";
import { QmpError } from "../src/index.js";

function feed(decoder: LineDecoder, chunks: Buffer[]): string[] {
  return chunks.flatMap((c) => decoder.push(c));
}

describe("LineDecoder", () => {
  it("returns every message of a chunk holding several", () => {
    const d = new LineDecoder();
    expect(d.push(Buffer.from('{"a":1}\r\n{"b":2}\n{"c":3}\r\n'))).toEqual(['{"a":1}', '{"b":2}', '{"c":3}']);
    expect(d.bufferedBytes).toBe(0);
  });

  it("reassembles a message delivered one byte at a time", () => {
    const d = new LineDecoder();
    const bytes = Buffer.from('{"return":{"status":"running"},"id":"c7"}\r\n');
    const out = feed(
      d,
      [...bytes].map((b) => Buffer.from([b])),
    );
    expect(out).toEqual(['{"return":{"status":"running"},"id":"c7"}']);
  });

  it("keeps a multi-byte UTF-8 character split across chunks intact", () => {
    const d = new LineDecoder();
    const bytes = Buffer.from('{"desc":"h\u00e9\u20ac\u{1f600}"}\n');
    const at = bytes.indexOf(0xe2) + 1; // inside the euro sign
    expect(feed(d, [bytes.subarray(0, at), bytes.subarray(at)])).toEqual([
      '{"desc":"h\u00e9\u20ac\u{1f600}"}',
    ]);
  });

  it("skips blank lines and holds an unterminated tail", () => {
    const d = new LineDecoder();
    expect(d.push(Buffer.from('\r\n\n{"a":1}\n{"b"'))).toEqual(['{"a":1}']);
    expect(d.bufferedBytes).toBe(4);
    expect(d.push(Buffer.from(":2}\n"))).toEqual(['{"b":2}']);
  });

  it("accepts a line of exactly the limit and rejects one byte more, even across chunks", () => {
    const ok = new LineDecoder(10);
    expect(ok.push(Buffer.from("0123456789\n"))).toEqual(["0123456789"]);
    const d = new LineDecoder(10);
    d.push(Buffer.from("012345"));
    let caught: unknown;
    try {
      d.push(Buffer.from("6789A"));
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(QmpError);
    expect((caught as QmpError).code).toBe("PROTOCOL");
    expect((caught as QmpError).message).toMatch(/exceeds 10 bytes/);
  });

  it("yields the same messages however the stream is cut (property)", () => {
    const json = fc.jsonValue().map((v) => ({ return: v, id: "x" }));
    fc.assert(
      fc.property(
        fc.array(json, { maxLength: 20 }),
        fc.array(fc.nat(), { maxLength: 30 }),
        (messages, cuts) => {
          const stream = Buffer.from(messages.map((m) => encodeMessage(m)).join(""));
          const points = [...new Set(cuts.map((c) => (stream.length === 0 ? 0 : c % stream.length)))].sort(
            (a, b) => a - b,
          );
          const chunks: Buffer[] = [];
          let prev = 0;
          for (const p of [...points, stream.length]) {
            chunks.push(stream.subarray(prev, p));
            prev = p;
          }
          const out = feed(new LineDecoder(), chunks).map((l) => JSON.parse(l));
          expect(out).toEqual(JSON.parse(JSON.stringify(messages)));
        },
      ),
    );
  });
});
