import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { encodeJson, type Frame, LineDecoder } from "../src/protocol/framing.js";

function feed(decoder: LineDecoder, chunks: Buffer[]): Frame[] {
  return chunks.flatMap((c) => decoder.push(c));
}

const line = (text: string): Frame => ({ kind: "line", text });

describe("LineDecoder", () => {
  it("returns every message of a chunk holding several", () => {
    const d = new LineDecoder(1024);
    expect(d.push(Buffer.from('{"a":1}\r\n{"b":2}\n{"c":3}\r\n'))).toEqual([
      line('{"a":1}'),
      line('{"b":2}'),
      line('{"c":3}'),
    ]);
  });

  it("reassembles a message delivered one byte at a time", () => {
    const bytes = Buffer.from('{"return":{"status":"running"},"id":"c7"}\r\n');
    const out = feed(
      new LineDecoder(1024),
      [...bytes].map((b) => Buffer.from([b])),
    );
    expect(out).toEqual([line('{"return":{"status":"running"},"id":"c7"}')]);
  });

  it("keeps a multi-byte UTF-8 character split across chunks intact", () => {
    const bytes = Buffer.from('{"desc":"h\u00e9\u20ac\u{1f600}"}\n');
    const at = bytes.indexOf(0xe2) + 1; // inside the euro sign
    expect(feed(new LineDecoder(1024), [bytes.subarray(0, at), bytes.subarray(at)])).toEqual([
      line('{"desc":"h\u00e9\u20ac\u{1f600}"}'),
    ]);
  });

  it("skips blank lines and holds an unterminated tail until its newline", () => {
    const d = new LineDecoder(1024);
    expect(d.push(Buffer.from('\r\n\n{"a":1}\n{"b"'))).toEqual([line('{"a":1}')]);
    expect(d.push(Buffer.from(":2}\n"))).toEqual([line('{"b":2}')]);
  });

  it("does not let a caller's reuse of its buffer change a held tail", () => {
    const d = new LineDecoder(1024);
    const chunk = Buffer.from('{"a"');
    d.push(chunk);
    chunk.fill(0x20);
    expect(d.push(Buffer.from(":1}\n"))).toEqual([line('{"a":1}')]);
  });

  it("accepts a line of exactly the bound", () => {
    expect(feed(new LineDecoder(5), [Buffer.from("12"), Buffer.from("345\n")])).toEqual([line("12345")]);
  });

  it("reports a line as soon as it outgrows the bound, skips the rest of it and decodes what follows", () => {
    const d = new LineDecoder(10);
    expect(d.push(Buffer.from("012345"))).toEqual([]);
    expect(d.push(Buffer.from("6789A"))).toEqual([{ kind: "oversized", bytes: 11 }]);
    expect(d.push(Buffer.from("BCDEF"))).toEqual([]);
    expect(d.push(Buffer.from("G\n12345\n"))).toEqual([line("12345")]);
  });

  it("drops a partial line on discard()", () => {
    const d = new LineDecoder(1024);
    d.push(Buffer.from('{"return": {"pid": 4'));
    d.discard();
    expect(d.push(Buffer.from('{"return": 7}\n'))).toEqual([line('{"return": 7}')]);
  });

  it("rejects a bound that is not a positive integer", () => {
    expect(() => new LineDecoder(0)).toThrow(RangeError);
  });

  it("yields the same messages however the stream is cut (property)", () => {
    const json = fc.jsonValue().map((v) => ({ return: v, id: "x" }));
    fc.assert(
      fc.property(
        fc.array(json, { maxLength: 20 }),
        fc.array(fc.nat(), { maxLength: 30 }),
        (messages, cuts) => {
          const stream = Buffer.from(messages.map((m) => `${encodeJson(m)}\n`).join(""));
          const points = [...new Set(cuts.map((c) => c % (stream.length + 1)))].sort((a, b) => a - b);
          const chunks: Buffer[] = [];
          let prev = 0;
          for (const p of [...points, stream.length]) {
            chunks.push(stream.subarray(prev, p));
            prev = p;
          }
          const out = feed(new LineDecoder(1 << 20), chunks).map((f) =>
            JSON.parse(f.kind === "line" ? f.text : "null"),
          );
          expect(out).toEqual(JSON.parse(JSON.stringify(messages)));
        },
      ),
    );
  });
});

describe("encodeJson", () => {
  it("matches JSON.stringify for JSON values", () => {
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        expect(encodeJson(value)).toBe(JSON.stringify(value));
      }),
    );
  });

  it("writes bigints as exact integers past 2^53, leaves out undefined fields and honours toJSON", () => {
    expect(encodeJson({ time: -2208988800000000001n, skip: undefined, list: [1n, "a"] })).toBe(
      '{"time":-2208988800000000001,"list":[1,"a"]}',
    );
    expect(encodeJson({ at: new Date(0) })).toBe('{"at":"1970-01-01T00:00:00.000Z"}');
  });
});
