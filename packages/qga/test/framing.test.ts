import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { encodeJson, type Frame, LineDecoder } from "../src/framing.js";

function decodeAll(decoder: LineDecoder, chunks: Buffer[]): Frame[] {
  return chunks.flatMap((chunk) => decoder.push(chunk));
}

function splitAt(bytes: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let start = 0;
  for (const point of [...points, bytes.length]) {
    chunks.push(bytes.subarray(start, point));
    start = point;
  }
  return chunks;
}

describe("LineDecoder", () => {
  it("yields the same frames however the stream is split into chunks", () => {
    const json = fc.jsonValue().map((v) => JSON.stringify(v));
    const piece = fc.oneof(
      json.map((text) => ({ text, delimited: false })),
      json.map((text) => ({ text, delimited: true })),
    );
    fc.assert(
      fc.property(
        fc.array(piece, { maxLength: 20 }),
        fc.array(fc.nat(), { maxLength: 30 }),
        (pieces, cuts) => {
          const wire = Buffer.concat(
            pieces.map((p) =>
              Buffer.concat([p.delimited ? Buffer.of(0xff) : Buffer.alloc(0), Buffer.from(`${p.text}\n`)]),
            ),
          );
          const frames = decodeAll(new LineDecoder(1 << 20), splitAt(wire, cuts));
          expect(frames).toEqual(pieces.map((p) => ({ kind: "line", text: p.text, delimited: p.delimited })));
        },
      ),
    );
  });

  it("drops a partial line when 0xFF arrives and marks the next line as delimited", () => {
    const decoder = new LineDecoder(1024);
    const frames = decodeAll(decoder, [
      Buffer.from('{"return": {"pid": 4'),
      Buffer.from([0x32, 0xff]),
      Buffer.from('{"return": 7}\n{"return": {}}\n'),
    ]);
    expect(frames).toEqual([
      { kind: "line", text: '{"return": 7}', delimited: true },
      { kind: "line", text: '{"return": {}}', delimited: false },
    ]);
  });

  it("skips blank lines", () => {
    expect(decodeAll(new LineDecoder(16), [Buffer.from("\n\n1\n\n")])).toEqual([
      { kind: "line", text: "1", delimited: false },
    ]);
  });

  it("reports an oversized line with its size, drops its bytes and keeps decoding after it", () => {
    const decoder = new LineDecoder(10);
    const frames = decodeAll(decoder, [
      Buffer.from("0123456"),
      Buffer.from("789abcdef"),
      Buffer.from("ghij\n12345\n"),
    ]);
    expect(frames).toEqual([
      { kind: "oversized", bytes: 20, delimited: false },
      { kind: "line", text: "12345", delimited: false },
    ]);
  });

  it("accepts a line of exactly the bound", () => {
    expect(decodeAll(new LineDecoder(5), [Buffer.from("12"), Buffer.from("345\n")])).toEqual([
      { kind: "line", text: "12345", delimited: false },
    ]);
  });

  it("rejects a bound that is not a positive integer", () => {
    expect(() => new LineDecoder(0)).toThrow(RangeError);
  });
});

describe("encodeJson", () => {
  it("matches JSON.stringify for JSON values", () => {
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        expect(JSON.parse(encodeJson(value))).toEqual(JSON.parse(JSON.stringify(value)));
      }),
    );
  });

  it("writes bigints as exact integers past 2^53 and leaves out undefined fields", () => {
    expect(encodeJson({ time: -2208988800000000001n, skip: undefined, list: [1n, "a"] })).toBe(
      '{"time":-2208988800000000001,"list":[1,"a"]}',
    );
  });

  it("replaces the string values of redacted keys by their length", () => {
    const line = encodeJson(
      { arguments: { path: "/bin/sh", "input-data": "c2VjcmV0" } },
      new Set(["input-data"]),
    );
    expect(line).toBe('{"arguments":{"path":"/bin/sh","input-data":"<redacted: 8 chars>"}}');
  });
});
