import { type Decoder, type Frame, LineDecoder } from "@stack/qmp/protocol";

/**
 * The guest agent's framing: QMP's newline-delimited JSON, except that the agent prefixes its reply to
 * `guest-sync-delimited` with a 0xFF byte. 0xFF never occurs in UTF-8, so it doubles as a marker that everything
 * buffered before it is leftover from an earlier client and must be thrown away.
 */
export const DELIMITER = 0xff;
const MARK = Buffer.of(DELIMITER);

/** Lines as LineDecoder reads them; the first line after a 0xFF carries it as its `prefix`. */
export class DelimitedDecoder implements Decoder {
  readonly #lines: LineDecoder;
  #delimited = false;

  constructor(maxLineBytes: number) {
    this.#lines = new LineDecoder(maxLineBytes);
  }

  get maxLineBytes(): number {
    return this.#lines.maxLineBytes;
  }

  push(chunk: Buffer): Frame[] {
    const frames: Frame[] = [];
    let start = 0;
    for (let at = chunk.indexOf(DELIMITER); at !== -1; at = chunk.indexOf(DELIMITER, start)) {
      this.#collect(chunk.subarray(start, at), frames);
      this.#lines.discard();
      this.#delimited = true;
      start = at + 1;
    }
    this.#collect(chunk.subarray(start), frames);
    return frames;
  }

  #collect(piece: Buffer, frames: Frame[]): void {
    for (const frame of this.#lines.push(piece)) {
      frames.push(this.#delimited ? { ...frame, prefix: MARK } : frame);
      this.#delimited = false;
    }
  }
}

/** True for a frame that followed a 0xFF: a possible reply to `guest-sync-delimited`. */
export function isDelimited(frame: Frame): boolean {
  return frame.prefix?.[0] === DELIMITER;
}
