import { QmpError } from "./errors.js";

/** QEMU's biggest regular reply (`query-qmp-schema`) is about 200 KiB; 16 MiB leaves room without trusting the peer. */
export const DEFAULT_MAX_LINE_BYTES = 16 * 1024 * 1024;

const NEWLINE = 0x0a;

/**
 * Splits a byte stream into newline-terminated lines. Bytes are kept until a whole line is present, so a multi-byte
 * UTF-8 character split across chunks decodes correctly. A line longer than `maxLineBytes` throws instead of growing
 * the buffer without bound: a peer that never sends a newline cannot exhaust memory.
 */
export class LineDecoder {
  private pending: Buffer[] = [];
  private pendingBytes = 0;

  constructor(private readonly maxLineBytes = DEFAULT_MAX_LINE_BYTES) {}

  /** Returns the complete lines in `chunk` (plus any carried-over prefix), without their `\n` / `\r\n`; blank lines are skipped. */
  push(chunk: Buffer): string[] {
    const lines: string[] = [];
    let start = 0;
    for (let nl = chunk.indexOf(NEWLINE); nl !== -1; nl = chunk.indexOf(NEWLINE, start)) {
      const piece = chunk.subarray(start, nl);
      this.ensureFits(piece.length);
      const line = this.pendingBytes === 0 ? piece : Buffer.concat([...this.pending, piece]);
      this.pending = [];
      this.pendingBytes = 0;
      const text = line.toString("utf8").trim();
      if (text !== "") lines.push(text);
      start = nl + 1;
    }
    if (start < chunk.length) {
      const rest = chunk.subarray(start);
      this.ensureFits(rest.length);
      // Copy: the caller may reuse its buffer, and a subarray would pin the whole chunk.
      this.pending.push(Buffer.from(rest));
      this.pendingBytes += rest.length;
    }
    return lines;
  }

  /** Bytes received after the last newline. */
  get bufferedBytes(): number {
    return this.pendingBytes;
  }

  private ensureFits(extra: number): void {
    if (this.pendingBytes + extra > this.maxLineBytes) {
      const size = this.pendingBytes + extra;
      this.pending = [];
      this.pendingBytes = 0;
      throw new QmpError(
        "PROTOCOL",
        `QMP message exceeds ${this.maxLineBytes} bytes without a newline (at least ${size} bytes): ` +
          "the peer is not a QMP server or is misbehaving; raise maxLineBytes if it is legitimate",
      );
    }
  }
}

/** One JSON message per line, as QEMU's QMP server expects (JSON.stringify never emits a raw newline). */
export function encodeMessage(message: object): string {
  return `${JSON.stringify(message)}\n`;
}
