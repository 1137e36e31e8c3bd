// Pure ECMA-119 field encoders. Nothing here does I/O or reads the clock.

export const SECTOR = 2048;

export function sectorsFor(bytes: number): number {
  return Math.ceil(bytes / SECTOR);
}

// Byte stores rather than Buffer's writeUInt32LE/BE: tens of thousands of records write several fields each.

/** 7.3.3: little-endian then big-endian copy of a 32-bit value. */
export function both32(buf: Buffer, offset: number, value: number): void {
  if (!(value >= 0 && value <= 0xffffffff)) throw new RangeError(`${value} does not fit in 32 bits`);
  buf[offset] = buf[offset + 7] = value & 0xff;
  buf[offset + 1] = buf[offset + 6] = (value >>> 8) & 0xff;
  buf[offset + 2] = buf[offset + 5] = (value >>> 16) & 0xff;
  buf[offset + 3] = buf[offset + 4] = value >>> 24;
}

/** 7.2.3: little-endian then big-endian copy of a 16-bit value. */
export function both16(buf: Buffer, offset: number, value: number): void {
  if (!(value >= 0 && value <= 0xffff)) throw new RangeError(`${value} does not fit in 16 bits`);
  buf[offset] = buf[offset + 3] = value & 0xff;
  buf[offset + 1] = buf[offset + 2] = value >>> 8;
}

/** Writes `text` as single bytes padded with spaces to `length` (a-/d-character fields). */
export function asciiField(buf: Buffer, offset: number, length: number, text: string): void {
  buf.fill(0x20, offset, offset + length);
  buf.write(text, offset, length, "latin1");
}

/** Writes `text` as UCS-2 big-endian, padded with UCS-2 spaces (Joliet SVD fields). */
export function ucs2Field(buf: Buffer, offset: number, length: number, text: string): void {
  for (let i = 0; i + 1 < length; i += 2) buf.writeUInt16BE(0x20, offset + i);
  const encoded = ucs2be(text);
  encoded.copy(buf, offset, 0, Math.min(encoded.length, length - (length % 2)));
}

export function ucs2be(text: string): Buffer {
  const out = Buffer.allocUnsafe(text.length * 2);
  writeUcs2be(out, 0, text);
  return out;
}

export function writeUcs2be(out: Buffer, at: number, text: string): void {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    out[at + 2 * i] = c >> 8;
    out[at + 2 * i + 1] = c & 0xff;
  }
}

// Names are mostly ASCII: a JavaScript loop over them costs less than a call into Buffer's native code.

export function isAscii(text: string): boolean {
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) > 0x7f) return false;
  return true;
}

export function utf8Length(text: string): number {
  return isAscii(text) ? text.length : Buffer.byteLength(text, "utf8");
}

/** Writes `text` as UTF-8 at `at`: for ASCII, such as ISO 9660 identifiers, the same bytes as latin1. */
export function writeUtf8(out: Buffer, at: number, text: string): void {
  if (!isAscii(text)) {
    out.write(text, at, "utf8");
    return;
  }
  for (let i = 0; i < text.length; i++) out[at + i] = text.charCodeAt(i);
}

/** 9.1.5: seven-byte recording date, always written in UTC (offset 0) so no local time zone leaks in. */
export function dirDate(date: Date): Buffer {
  const out = Buffer.allocUnsafe(7);
  const clamped = clampTime(date, Date.UTC(1900, 0, 1), Date.UTC(2155, 11, 31, 23, 59, 59));
  out[0] = clamped.getUTCFullYear() - 1900;
  out[1] = clamped.getUTCMonth() + 1;
  out[2] = clamped.getUTCDate();
  out[3] = clamped.getUTCHours();
  out[4] = clamped.getUTCMinutes();
  out[5] = clamped.getUTCSeconds();
  out[6] = 0;
  return out;
}

/** 8.4.26.1: seventeen-byte volume date; `undefined` encodes "not specified". */
export function volumeDate(date: Date | undefined): Buffer {
  const out = Buffer.alloc(17);
  if (date === undefined) {
    out.write("0000000000000000", 0, "latin1");
    return out;
  }
  const d = clampTime(date, Date.UTC(1, 0, 1), Date.UTC(9999, 11, 31, 23, 59, 59));
  const pad = (n: number, w: number) => String(n).padStart(w, "0");
  const text =
    pad(d.getUTCFullYear(), 4) +
    pad(d.getUTCMonth() + 1, 2) +
    pad(d.getUTCDate(), 2) +
    pad(d.getUTCHours(), 2) +
    pad(d.getUTCMinutes(), 2) +
    pad(d.getUTCSeconds(), 2) +
    pad(Math.floor(d.getUTCMilliseconds() / 10), 2);
  out.write(text, 0, "latin1");
  out[16] = 0;
  return out;
}

function clampTime(date: Date, min: number, max: number): Date {
  const t = date.getTime();
  if (Number.isNaN(t)) return new Date(min);
  return new Date(Math.min(Math.max(t, min), max));
}

export const FLAG_DIRECTORY = 0x02;
export const FLAG_MULTI_EXTENT = 0x80;

export interface DirectoryRecordFields {
  extent: number;
  size: number;
  date: Buffer;
  flags: number;
  /** Raw identifier bytes: 0x00 for ".", 0x01 for "..", d-characters or UCS-2BE otherwise. */
  identifier: Buffer;
  /** System use entries, copied in order after the identifier. */
  systemUse?: Buffer[];
}

/** Length of a directory record before its system use area (9.1.12: pad byte after an even-length identifier). */
export function recordBaseLength(identifierLength: number): number {
  return 33 + identifierLength + (identifierLength % 2 === 0 ? 1 : 0);
}

export function recordLength(f: DirectoryRecordFields): number {
  let length = recordBaseLength(f.identifier.length);
  for (const entry of f.systemUse ?? []) length += entry.length;
  return length + (length % 2);
}

/**
 * Writes the fixed part of a record of `length` bytes at `at` (up to its identifier's length byte); the
 * identifier and system use follow at `at + 33`. `out` must hold zeros there: pad bytes are not written.
 * Writing in place rather than allocating a buffer per record keeps layouts of many files cheap.
 */
export function writeRecordHeader(
  out: Buffer,
  at: number,
  length: number,
  extent: number,
  size: number,
  date: Buffer,
  flags: number,
  identifierLength: number,
): void {
  if (length > 255) throw new RangeError(`directory record of ${length} bytes exceeds 255`);
  out[at] = length;
  both32(out, at + 2, extent);
  both32(out, at + 10, size);
  for (let i = 0; i < 7; i++) out[at + 18 + i] = date[i]!;
  out[at + 25] = flags;
  both16(out, at + 28, 1);
  out[at + 32] = identifierLength;
}

export function directoryRecord(f: DirectoryRecordFields): Buffer {
  const out = Buffer.alloc(recordLength(f));
  writeRecordHeader(out, 0, out.length, f.extent, f.size, f.date, f.flags, f.identifier.length);
  f.identifier.copy(out, 33);
  let pos = recordBaseLength(f.identifier.length);
  for (const entry of f.systemUse ?? []) pos += entry.copy(out, pos);
  return out;
}

/** 9.4: one path table record; `bigEndian` selects the M table form. */
export function pathTableRecord(
  identifier: Buffer,
  extent: number,
  parent: number,
  bigEndian: boolean,
): Buffer {
  const length = 8 + identifier.length + (identifier.length % 2);
  const out = Buffer.alloc(length);
  out[0] = identifier.length;
  out[1] = 0;
  if (bigEndian) {
    out.writeUInt32BE(extent, 2);
    out.writeUInt16BE(parent, 6);
  } else {
    out.writeUInt32LE(extent, 2);
    out.writeUInt16LE(parent, 6);
  }
  identifier.copy(out, 8);
  return out;
}

export interface VolumeDescriptorFields {
  type: 1 | 2;
  systemId: string;
  volumeId: string;
  volumeSpaceSize: number;
  pathTableSize: number;
  lPathTable: number;
  mPathTable: number;
  rootRecord: Buffer;
  date: Date;
  applicationId: string;
  /** Joliet: UCS-2 text fields and the escape sequence of UCS-2 level 3. */
  joliet: boolean;
}

/** 8.4 primary / 8.5 supplementary volume descriptor. */
export function volumeDescriptor(f: VolumeDescriptorFields): Buffer {
  const out = Buffer.alloc(SECTOR);
  out[0] = f.type;
  out.write("CD001", 1, "latin1");
  out[6] = 1;
  const text = f.joliet ? ucs2Field : asciiField;
  text(out, 8, 32, f.systemId);
  text(out, 40, 32, f.volumeId);
  both32(out, 80, f.volumeSpaceSize);
  if (f.joliet) out.write("%/E", 88, "latin1");
  both16(out, 120, 1);
  both16(out, 124, 1);
  both16(out, 128, SECTOR);
  both32(out, 132, f.pathTableSize);
  out.writeUInt32LE(f.lPathTable, 140);
  out.writeUInt32BE(f.mPathTable, 148);
  f.rootRecord.copy(out, 156);
  text(out, 190, 128, "");
  text(out, 318, 128, "");
  text(out, 446, 128, "");
  text(out, 574, 128, f.applicationId);
  text(out, 702, 37, "");
  text(out, 739, 37, "");
  text(out, 776, 37, "");
  volumeDate(f.date).copy(out, 813);
  volumeDate(f.date).copy(out, 830);
  volumeDate(undefined).copy(out, 847);
  volumeDate(undefined).copy(out, 864);
  out[881] = 1;
  return out;
}

export function terminatorDescriptor(): Buffer {
  const out = Buffer.alloc(SECTOR);
  out[0] = 255;
  out.write("CD001", 1, "latin1");
  out[6] = 1;
  return out;
}
