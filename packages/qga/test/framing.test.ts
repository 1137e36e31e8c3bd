import type { Frame } from "@stack/qmp/protocol";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { DelimitedDecoder, isDelimited } from "../src/framing.js";

function decodeAll(decoder: DelimitedDecoder, chunks: Buffer[]): { frame: Frame; delimited: boolean }[] {
  return chunks
    .flatMap((chunk) => decoder.push(chunk))
    .map((frame) => ({ frame, delimited: isDelimited(frame) }));
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

const text = (f: { frame: Frame }) => (f.frame.kind === "line" ? f.frame.text : undefined);

describe("DelimitedDecoder", () => {
  it("yields the same lines, marked after 0xFF, however the stream is split into chunks", () => {
    const json = fc.jsonValue().map((v) => JSON.stringify(v));
    const piece = fc.record({ text: json, delimited: fc.boolean() });
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
          const frames = decodeAll(new DelimitedDecoder(1 << 20), splitAt(wire, cuts));
          expect(frames.map((f) => ({ text: text(f), delimited: f.delimited }))).toEqual(pieces);
        },
      ),
    );
  });

  it("drops a partial line when 0xFF arrives and marks only the next line", () => {
    const frames = decodeAll(new DelimitedDecoder(1024), [
      Buffer.from('{"return": {"pid": 4'),
      Buffer.from([0x32, 0xff]),
      Buffer.from('{"return": 7}\n{"return": {}}\n'),
    ]);
    expect(frames.map((f) => [text(f), f.delimited])).toEqual([
      ['{"return": 7}', true],
      ['{"return": {}}', false],
    ]);
  });

  it("reports an oversized line and keeps decoding after it", () => {
    const decoder = new DelimitedDecoder(10);
    const frames = decodeAll(decoder, [
      Buffer.from("0123456"),
      Buffer.from("789abcdef"),
      Buffer.from("ghij\n12345\n"),
    ]);
    expect(frames.map((f) => f.frame)).toEqual([
      { kind: "oversized", bytes: 16 },
      { kind: "line", text: "12345" },
    ]);
  });
});
