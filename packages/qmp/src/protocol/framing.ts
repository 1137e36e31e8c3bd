/**
 * Newline-delimited JSON, the wire format of QMP and of the guest agent: one JSON document per line, in UTF-8.
 */

export type Frame =
  | { kind: "line"; text: string; prefix?: Buffer }
  /**
   * A line that outgrew the decoder's bound, reported as soon as it did; `bytes` is its size at that moment. The
   * rest of it, up to its newline, is skipped without being kept.
   */
  | { kind: "oversized"; bytes: number; prefix?: Buffer };
// `prefix`: bytes a peer sent ahead of the line outside the JSON (the guest agent's 0xFF); set by a decoder
// that knows them, never by LineDecoder.

/** What a Channel reads its frames with. */
export interface Decoder {
  push(chunk: Buffer): Frame[];
}

const NEWLINE = 0x0a;

/**
 * Splits a byte stream into lines. Bytes are kept until a whole line is present, so a multi-byte UTF-8 character
 * split across chunks decodes correctly; blank lines are skipped and surrounding whitespace (`\r`) trimmed. A line
 * longer than `maxLineBytes` is reported as an `oversized` frame instead of growing the buffer: a peer that never
 * sends a newline cannot exhaust memory.
 */
export class LineDecoder implements Decoder {
  readonly maxLineBytes: number;
  #parts: Buffer[] = [];
  #size = 0;
  /** Inside a line already reported as oversized: its bytes are skipped up to the next newline. */
  #skipping = false;

  constructor(maxLineBytes: number) {
    if (!Number.isInteger(maxLineBytes) || maxLineBytes < 1) {
      throw new RangeError(`maxLineBytes must be a positive integer, got ${maxLineBytes}`);
    }
    this.maxLineBytes = maxLineBytes;
  }

  push(chunk: Buffer): Frame[] {
    const frames: Frame[] = [];
    let start = 0;
    for (let nl = chunk.indexOf(NEWLINE); nl !== -1; nl = chunk.indexOf(NEWLINE, start)) {
      this.#append(chunk.subarray(start, nl), frames);
      if (!this.#skipping && this.#size > 0) {
        const bytes = this.#parts.length === 1 ? this.#parts[0]! : Buffer.concat(this.#parts, this.#size);
        const text = bytes.toString("utf8").trim();
        if (text !== "") frames.push({ kind: "line", text });
      }
      this.discard();
      start = nl + 1;
    }
    // Copied: the caller may reuse its buffer, and a subarray would pin the whole chunk.
    if (start < chunk.length) this.#append(Buffer.from(chunk.subarray(start)), frames);
    return frames;
  }

  /** Drops the partial line received so far (a peer's resynchronisation marker says it is garbage). */
  discard(): void {
    this.#parts = [];
    this.#size = 0;
    this.#skipping = false;
  }

  #append(piece: Buffer, frames: Frame[]): void {
    if (this.#skipping || piece.length === 0) return;
    if (this.#size + piece.length > this.maxLineBytes) {
      frames.push({ kind: "oversized", bytes: this.#size + piece.length });
      this.#parts = [];
      this.#size = 0;
      this.#skipping = true;
      return;
    }
    this.#parts.push(piece);
    this.#size += piece.length;
  }
}

/**
 * JSON encoding that also writes bigints as plain integers (the guest agent's `guest-set-time` takes nanoseconds
 * since the epoch, past 2^53); otherwise as JSON.stringify (toJSON, undefined fields left out). Never emits a raw
 * newline.
 */
export function encodeJson(value: unknown): string {
  if (typeof value === "bigint") return value.toString();
  if (typeof (value as { toJSON?: unknown } | null)?.toJSON === "function") {
    return encodeJson((value as { toJSON(): unknown }).toJSON());
  }
  if (Array.isArray(value)) return `[${value.map((item) => encodeJson(item)).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const fields: string[] = [];
    for (const [key, field] of Object.entries(value)) {
      if (field !== undefined) fields.push(`${JSON.stringify(key)}:${encodeJson(field)}`);
    }
    return `{${fields.join(",")}}`;
  }
  return JSON.stringify(value) ?? "null";
}

/** The JSON value of a line, or undefined when the line is not JSON. */
export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
