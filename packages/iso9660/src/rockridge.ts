// Pure SUSP (IEEE P1281) and Rock Ridge (RRIP) system use entries, and the split of a record's entries
// between the directory record and continuation areas.

import { both32, SECTOR, utf8Length, writeUtf8 } from "./encode.js";

/** Writes an entry's four-byte header (signature, length, version 1) at `at`. */
function header(out: Buffer, at: number, signature: string, length: number): void {
  out[at] = signature.charCodeAt(0);
  out[at + 1] = signature.charCodeAt(1);
  out[at + 2] = length;
  out[at + 3] = 1;
}

// Entries are allocated from Node's shared pool (every byte is written): one ArrayBuffer per entry made
// garbage collection the main cost of laying out tens of thousands of files.
function entry(signature: string, body: Buffer): Buffer {
  const out = Buffer.allocUnsafe(4 + body.length);
  header(out, 0, signature, out.length);
  body.copy(out, 4);
  return out;
}

/** The entries of `encoded`, a run of whole entries, as views of it. */
function entriesIn(encoded: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0; at < encoded.length; at += encoded[at + 2]!)
    out.push(encoded.subarray(at, at + encoded[at + 2]!));
  return out;
}

/** SP: marks the root "." record as carrying SUSP, with no bytes skipped. */
export function spEntry(): Buffer {
  return entry("SP", Buffer.from([0xbe, 0xef, 0]));
}

const ER_ID = "RRIP_1991A";
const ER_DESCRIPTOR = "THE ROCK RIDGE INTERCHANGE PROTOCOL PROVIDES SUPPORT FOR POSIX FILE SYSTEM SEMANTICS";
const ER_SOURCE =
  "PLEASE CONTACT DISC PUBLISHER FOR SPECIFICATION SOURCE.  SEE PUBLISHER IDENTIFIER IN PRIMARY VOLUME DESCRIPTOR FOR CONTACT INFORMATION.";

/** ER: declares the Rock Ridge extension (root "." record only). */
export function erEntry(): Buffer {
  const body = Buffer.alloc(4 + ER_ID.length + ER_DESCRIPTOR.length + ER_SOURCE.length);
  body[0] = ER_ID.length;
  body[1] = ER_DESCRIPTOR.length;
  body[2] = ER_SOURCE.length;
  body[3] = 1;
  body.write(ER_ID + ER_DESCRIPTOR + ER_SOURCE, 4, "latin1");
  return entry("ER", body);
}

export interface PosixAttributes {
  mode: number;
  links: number;
  uid: number;
  gid: number;
  /** File serial number: libarchive treats records sharing one as hard links, so each node has its own. */
  serial: number;
}

export const PX_LENGTH = 44;

/** PX in its 44-byte form, which carries the serial number, written at `at`. */
export function writePx(
  out: Buffer,
  at: number,
  mode: number,
  links: number,
  uid: number,
  gid: number,
  serial: number,
): void {
  header(out, at, "PX", PX_LENGTH);
  both32(out, at + 4, mode);
  both32(out, at + 12, links);
  both32(out, at + 20, uid);
  both32(out, at + 28, gid);
  both32(out, at + 36, serial);
}

export function pxEntry(a: PosixAttributes): Buffer {
  const out = Buffer.allocUnsafe(PX_LENGTH);
  writePx(out, 0, a.mode, a.links, a.uid, a.gid, a.serial);
  return out;
}

export const TF_LENGTH = 26;

/** TF: modification, access and attribute-change times, all `date` (a 7-byte recording date), at `at`. */
export function writeTf(out: Buffer, at: number, date: Buffer): void {
  header(out, at, "TF", TF_LENGTH);
  out[at + 4] = 0x0e;
  for (let i = 0; i < 21; i++) out[at + 5 + i] = date[i % 7]!;
}

export function tfEntry(date: Buffer): Buffer {
  const out = Buffer.allocUnsafe(TF_LENGTH);
  writeTf(out, 0, date);
  return out;
}

const MAX_ENTRY = 255;
const CONTINUE = 0x01;

const NM_ROOM = MAX_ENTRY - 5;

/** Bytes of the NM entries of `name` (see writeNm). */
export function nmLength(name: string): number {
  const bytes = utf8Length(name);
  return bytes + 5 * Math.max(1, Math.ceil(bytes / NM_ROOM));
}

/** NM: the POSIX name at `at`, split into several entries flagged CONTINUE when longer than one entry holds. */
export function writeNm(out: Buffer, at: number, name: string): void {
  const length = utf8Length(name);
  if (length <= NM_ROOM) {
    header(out, at, "NM", 5 + length);
    out[at + 4] = 0;
    writeUtf8(out, at + 5, name);
    return;
  }
  const bytes = Buffer.from(name, "utf8");
  for (let i = 0; i < bytes.length; i += NM_ROOM) {
    const chunk = bytes.subarray(i, i + NM_ROOM);
    header(out, at, "NM", 5 + chunk.length);
    out[at + 4] = i + NM_ROOM < bytes.length ? CONTINUE : 0;
    at += 5 + chunk.copy(out, at + 5);
  }
}

export function nmEntries(name: string): Buffer[] {
  const out = Buffer.allocUnsafe(nmLength(name));
  writeNm(out, 0, name);
  return entriesIn(out);
}

const SL_CURRENT = 0x02;
const SL_PARENT = 0x04;
const SL_ROOT = 0x08;

/** SL: a symbolic link target as component records, spread over several SL entries when long. */
export function slEntries(target: string): Buffer[] {
  const components: Buffer[] = [];
  const parts = target.split("/");
  if (target.startsWith("/")) {
    components.push(Buffer.from([SL_ROOT, 0]));
    parts.shift();
  }
  for (const part of parts) {
    if (part === "") continue;
    if (part === ".") components.push(Buffer.from([SL_CURRENT, 0]));
    else if (part === "..") components.push(Buffer.from([SL_PARENT, 0]));
    else {
      const bytes = Buffer.from(part, "utf8");
      // A component longer than one record is split, each piece but the last flagged CONTINUE.
      for (let i = 0; i < bytes.length; i += 248) {
        const piece = bytes.subarray(i, i + 248);
        const more = i + 248 < bytes.length;
        components.push(Buffer.concat([Buffer.from([more ? CONTINUE : 0, piece.length]), piece]));
      }
    }
  }
  const out: Buffer[] = [];
  let current: Buffer[] = [];
  let used = 0;
  // A continued entry ends with an empty text component flagged CONTINUE: Linux then adds no slash at the
  // entry boundary and libarchive (which never adds one there) gets the slash from the component before it.
  const bridge = Buffer.from([CONTINUE, 0]);
  const room = MAX_ENTRY - 5 - bridge.length;
  const flush = (more: boolean) => {
    const body = more ? [...current, bridge] : current;
    out.push(entry("SL", Buffer.concat([Buffer.from([more ? CONTINUE : 0]), ...body])));
    current = [];
    used = 0;
  };
  for (const component of components) {
    if (used + component.length > room) flush(true);
    current.push(component);
    used += component.length;
  }
  flush(false);
  return out;
}

/** CL: in a relocated directory's placeholder, points to where the directory really is. */
export function clEntry(extent: number): Buffer {
  const body = Buffer.alloc(8);
  both32(body, 0, extent);
  return entry("CL", body);
}

/** PL: in a relocated directory's ".." record, points to its original parent. */
export function plEntry(extent: number): Buffer {
  const body = Buffer.alloc(8);
  both32(body, 0, extent);
  return entry("PL", body);
}

/** RE: marks the relocated directory's own record so readers hide it from rr_moved. */
export function reEntry(): Buffer {
  return entry("RE", Buffer.alloc(0));
}

export const CE_LENGTH = 28;

export function ceEntry(extent: number, offset: number, length: number): Buffer {
  const body = Buffer.alloc(24);
  both32(body, 0, extent);
  both32(body, 8, offset);
  both32(body, 16, length);
  return entry("CE", body);
}

export interface SystemUseSplit {
  /** Entries kept in the directory record; a CE entry must follow when `continuation` is not empty. */
  inline: Buffer[];
  /** Continuation areas in order; each but the last is followed by a CE entry of its own. */
  continuation: Buffer[][];
}

/**
 * Keeps as many entries as fit in the record's `room` bytes and moves the rest to continuation areas of at most
 * one sector, leaving room for the CE entry that links each area to the next.
 */
export function splitSystemUse(entries: Buffer[], room: number): SystemUseSplit {
  const total = entries.reduce((n, e) => n + e.length, 0);
  if (total <= room) return { inline: entries, continuation: [] };
  const inline: Buffer[] = [];
  let i = 0;
  let used = 0;
  while (i < entries.length && used + entries[i]!.length <= room - CE_LENGTH) used += entries[i++]!.length;
  inline.push(...entries.slice(0, i));
  const continuation: Buffer[][] = [];
  while (i < entries.length) {
    const area: Buffer[] = [];
    let areaUsed = 0;
    let rest = entries.slice(i).reduce((n, e) => n + e.length, 0);
    while (i < entries.length) {
      const len = entries[i]!.length;
      const fitsAsLast = areaUsed + rest <= SECTOR;
      if (!fitsAsLast && areaUsed + len > SECTOR - CE_LENGTH) break;
      area.push(entries[i]!);
      areaUsed += len;
      rest -= len;
      i++;
    }
    continuation.push(area);
  }
  return { inline, continuation };
}
