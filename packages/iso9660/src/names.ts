// Pure name handling: ISO 9660 identifiers per interchange level, Joliet identifiers, and the
// ECMA-119 9.3 ordering used for directory records and path tables.

import { isAscii } from "./encode.js";

export type IsoLevel = 1 | 2 | 3;

const JOLIET_MAX = 64;

/** Characters a Joliet identifier may not hold (Joliet spec 3.3) plus controls. */
const JOLIET_FORBIDDEN = /[\u0000-\u001f*/:;?\\]/g;
const SURROGATE_PAIR = /[\ud800-\udbff][\udc00-\udfff]/g;
/** Anything the two replacements above would change. */
const JOLIET_UNCLEAN = /[\u0000-\u001f*/:;?\\\ud800-\udfff]/;
const NOT_D_CHARACTER = /[^A-Z0-9_]/g;

/**
 * The index of the last `char` (a code unit) in text[0, end), or -1. String.prototype.lastIndexOf is a call
 * into the runtime in V8; sorting and naming tens of thousands of identifiers spent more time in that call
 * than in the search.
 */
function lastIndex(text: string, char: number, end: number): number {
  for (let i = end - 1; i >= 0; i--) if (text.charCodeAt(i) === char) return i;
  return -1;
}

const DOT = 0x2e;
const SEMICOLON = 0x3b;

/** Where a name's extension starts (after its last dot), or -1 when it has none; a leading dot starts no extension. */
function extensionDot(name: string): number {
  const dot = lastIndex(name, DOT, name.length);
  return dot <= 0 ? -1 : dot;
}

function toDCharacters(text: string): string {
  return text.toUpperCase().replace(NOT_D_CHARACTER, "_");
}

interface Limits {
  base: number;
  ext: number;
  total: number;
}

// Extensions stop at 20 so at least ten characters remain for the name and its collision counter.
const LEVEL1_FILE: Limits = { base: 8, ext: 3, total: 11 };
const LEVEL1_DIR: Limits = { base: 8, ext: 0, total: 8 };
const FILE: Limits = { base: 30, ext: 20, total: 30 };
const DIR: Limits = { base: 31, ext: 0, total: 31 };

/**
 * Produces unique identifiers within one directory. Candidates are offered in a fixed order (the caller sorts by
 * source name), so collisions always resolve the same way and images stay reproducible.
 */
export class NameAllocator {
  private readonly taken = new Set<string>();

  /** ISO 9660 identifier, e.g. `README.TXT;1` for a file or `DOCS` for a directory. */
  iso(name: string, isDir: boolean, level: IsoLevel): string {
    const limits = level === 1 ? (isDir ? LEVEL1_DIR : LEVEL1_FILE) : isDir ? DIR : FILE;
    const dot = isDir ? -1 : extensionDot(name);
    let base: string;
    let ext: string;
    if (dot < 0) {
      base = toDCharacters(name);
      ext = "";
    } else if (!isAscii(name)) {
      // Upper-casing may change the length of non-ASCII text (ß is SS), so each part is mapped on its own.
      base = toDCharacters(name.slice(0, dot));
      ext = toDCharacters(name.slice(dot + 1));
    } else {
      const mapped = toDCharacters(name);
      base = mapped.slice(0, dot);
      ext = mapped.slice(dot + 1);
    }
    ext = ext.slice(0, limits.ext);
    const maxBase = Math.min(limits.base, limits.total - ext.length);
    const key = this.unique(base.slice(0, maxBase) || "_", maxBase, ext);
    return isDir ? key : `${key}${ext ? "" : "."};1`;
  }

  /** Joliet identifier (before UCS-2 encoding): forbidden characters and non-BMP characters become `_`. */
  joliet(name: string, isDir: boolean): string {
    const cleaned = JOLIET_UNCLEAN.test(name)
      ? name.replace(SURROGATE_PAIR, "_").replace(JOLIET_FORBIDDEN, "_")
      : name;
    // Within 64 characters a name is its own first candidate, whatever its extension: no split and rejoin.
    if (cleaned.length <= JOLIET_MAX && !this.taken.has(cleaned)) {
      this.taken.add(cleaned);
      return isDir ? cleaned : `${cleaned};1`;
    }
    const dot = isDir ? -1 : extensionDot(cleaned);
    const extLength = dot < 0 ? 0 : cleaned.length - dot - 1;
    const hasExt = extLength > 0 && extLength < JOLIET_MAX / 2;
    const ext = hasExt ? cleaned.slice(dot + 1) : "";
    const base = hasExt ? cleaned.slice(0, dot) : cleaned;
    const maxBase = JOLIET_MAX - (hasExt ? ext.length + 1 : 0);
    const key = this.unique(base.slice(0, maxBase), maxBase, ext);
    return isDir ? key : `${key};1`;
  }

  /** `base` (shortened to take a counter when taken) and `.ext` unless `ext` is empty, not yet given out. */
  private unique(base: string, maxBase: number, ext: string): string {
    let candidate = ext ? `${base}.${ext}` : base;
    for (let n = 1; this.taken.has(candidate); n++) {
      const suffix = String(n);
      const b = base.slice(0, Math.max(0, maxBase - suffix.length)) + suffix;
      candidate = ext ? `${b}.${ext}` : b;
    }
    this.taken.add(candidate);
    return candidate;
  }
}

/** Compares a[aFrom, aTo) with b[bFrom, bTo) code unit by code unit, the shorter padded with spaces (9.3 a/b). */
function comparePadded(a: string, aFrom: number, aTo: number, b: string, bFrom: number, bTo: number): number {
  const n = Math.max(aTo - aFrom, bTo - bFrom);
  for (let i = 0; i < n; i++) {
    const ca = aFrom + i < aTo ? a.charCodeAt(aFrom + i) : 0x20;
    const cb = bFrom + i < bTo ? b.charCodeAt(bFrom + i) : 0x20;
    if (ca !== cb) return ca - cb;
  }
  return 0;
}

/**
 * ECMA-119 9.3 order of directory records (Joliet applies it to UCS-2 code units): file name, then extension,
 * both padded with spaces, then version descending; a directory identifier is all name. Identifiers that differ
 * only in trailing spaces tie under 9.3; plain code unit order breaks the tie so the order is total. Parts are
 * found by index, without copying, since sorting compares each identifier many times.
 */
export function compareIdentifiers(a: string, aIsDir: boolean, b: string, bIsDir: boolean): number {
  const aSemi = aIsDir ? -1 : lastIndex(a, SEMICOLON, a.length);
  const bSemi = bIsDir ? -1 : lastIndex(b, SEMICOLON, b.length);
  const aBody = aSemi < 0 ? a.length : aSemi;
  const bBody = bSemi < 0 ? b.length : bSemi;
  const aDot = aIsDir ? -1 : lastIndex(a, DOT, aBody);
  const bDot = bIsDir ? -1 : lastIndex(b, DOT, bBody);
  const aBase = aDot <= 0 ? aBody : aDot;
  const bBase = bDot <= 0 ? bBody : bDot;
  const aExt = aDot <= 0 ? aBody : aDot + 1;
  const bExt = bDot <= 0 ? bBody : bDot + 1;
  return (
    comparePadded(a, 0, aBase, b, 0, bBase) ||
    comparePadded(a, aExt, aBody, b, bExt, bBody) ||
    version(b, bSemi) - version(a, aSemi) ||
    (a < b ? -1 : a > b ? 1 : 0)
  );
}

/** The version after `;`: digits are read in place (identifiers end in ;1), anything else as Number() reads it. */
function version(id: string, semi: number): number {
  if (semi < 0) return 0;
  // Beyond 15 digits a running sum could round differently from Number().
  if (id.length - semi - 1 > 15) return Number(id.slice(semi + 1));
  let value = 0;
  for (let i = semi + 1; i < id.length; i++) {
    const digit = id.charCodeAt(i) - 0x30;
    if (digit < 0 || digit > 9) return Number(id.slice(semi + 1));
    value = value * 10 + digit;
  }
  return semi + 1 < id.length ? value : 0;
}
