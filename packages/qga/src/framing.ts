/**
 * Wire framing of the guest agent protocol: one JSON document per line, except that the agent prefixes the
 * reply to `guest-sync-delimited` with a 0xFF byte. 0xFF never occurs in UTF-8, so it doubles as a marker that
 * everything buffered before it is leftover from an earlier client and must be thrown away.
 */

const NEWLINE = 0x0a;
export const DELIMITER = 0xff;

export type Frame =
  | { kind: "line"; text: string; delimited: boolean }
  /** A line longer than the decoder's bound; its bytes were dropped, only its size is known. */
  | { kind: "oversized"; bytes: number; delimited: boolean };

export class LineDecoder {
  readonly maxLineBytes: number;
  #parts: Buffer[] = [];
  #size = 0;
  /** Bytes dropped from the current line once it outgrew the bound; 0 while within it. */
  #dropped = 0;
  #delimited = false;

  constructor(maxLineBytes: number) {
    if (!Number.isInteger(maxLineBytes) || maxLineBytes < 1) {
      throw new RangeError(`maxLineBytes must be a positive integer, got ${maxLineBytes}`);
    }
    this.maxLineBytes = maxLineBytes;
  }

  push(chunk: Buffer): Frame[] {
    const frames: Frame[] = [];
    // Both positions are cached so a chunk holding many lines is scanned once, not once per line.
    let newline = chunk.indexOf(NEWLINE);
    let delimiter = chunk.indexOf(DELIMITER);
    let start = 0;
    while (start < chunk.length) {
      const stop = newline === -1 ? delimiter : delimiter === -1 ? newline : Math.min(newline, delimiter);
      this.#append(chunk.subarray(start, stop === -1 ? chunk.length : stop));
      if (stop === -1) break;
      if (stop === delimiter) {
        this.#reset(true);
        delimiter = chunk.indexOf(DELIMITER, stop + 1);
      } else {
        const frame = this.#take();
        if (frame) frames.push(frame);
        newline = chunk.indexOf(NEWLINE, stop + 1);
      }
      start = stop + 1;
    }
    return frames;
  }

  #append(segment: Buffer): void {
    if (segment.length === 0) return;
    if (this.#dropped > 0) {
      this.#dropped += segment.length;
    } else if (this.#size + segment.length > this.maxLineBytes) {
      this.#dropped = this.#size + segment.length;
      this.#parts = [];
      this.#size = 0;
    } else {
      this.#parts.push(segment);
      this.#size += segment.length;
    }
  }

  #take(): Frame | undefined {
    const delimited = this.#delimited;
    let frame: Frame | undefined;
    if (this.#dropped > 0) {
      frame = { kind: "oversized", bytes: this.#dropped, delimited };
    } else if (this.#size > 0) {
      const bytes = this.#parts.length === 1 ? this.#parts[0]! : Buffer.concat(this.#parts, this.#size);
      frame = { kind: "line", text: bytes.toString("utf8"), delimited };
    }
    this.#reset(false);
    return frame;
  }

  #reset(delimited: boolean): void {
    this.#parts = [];
    this.#size = 0;
    this.#dropped = 0;
    this.#delimited = delimited;
  }
}

/**
 * JSON encoding that also writes bigints as plain integers: `guest-set-time` takes nanoseconds since the epoch,
 * which are past 2^53 and so cannot travel through a JS number. Keys listed in `redact` have string values
 * replaced by a length note, for logs.
 */
export function encodeJson(value: unknown, redact?: ReadonlySet<string>): string {
  if (typeof value === "bigint") return value.toString();
  if (Array.isArray(value)) return `[${value.map((item) => encodeJson(item, redact)).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const fields: string[] = [];
    for (const [key, field] of Object.entries(value)) {
      if (field === undefined) continue;
      const encoded =
        redact?.has(key) && typeof field === "string"
          ? JSON.stringify(`<redacted: ${field.length} chars>`)
          : encodeJson(field, redact);
      fields.push(`${JSON.stringify(key)}:${encoded}`);
    }
    return `{${fields.join(",")}}`;
  }
  return JSON.stringify(value) ?? "null";
}
