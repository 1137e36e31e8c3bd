// Pure name handling: ISO 9660 identifiers per interchange level, Joliet identifiers, and the
// ECMA-119 9.3 ordering used for directory records and path tables.

export type IsoLevel = 1 | 2 | 3;

interface NameParts {
  base: string;
  ext: string;
}

const JOLIET_MAX = 64;

/** Characters a Joliet identifier may not hold (Joliet spec 3.3) plus controls. */
const JOLIET_FORBIDDEN = /[\u0000-\u001f*/:;?\\]/g;
const SURROGATE_PAIR = /[\ud800-\udbff][\udc00-\udfff]/g;

function splitExtension(name: string): NameParts {
  const dot = name.lastIndexOf(".");
  if (dot <= 0) return { base: name, ext: "" };
  return { base: name.slice(0, dot), ext: name.slice(dot + 1) };
}

function toDCharacters(text: string): string {
  return text.toUpperCase().replace(/[^A-Z0-9_]/g, "_");
}

/** Limits of the File Name / File Name Extension parts at each interchange level (ECMA-119 7.5, 10.1-10.3). */
function isoLimits(level: IsoLevel, isDir: boolean): { base: number; ext: number; total: number } {
  if (level === 1) return isDir ? { base: 8, ext: 0, total: 8 } : { base: 8, ext: 3, total: 11 };
  // Extensions stop at 20 so at least ten characters remain for the name and its collision counter.
  return isDir ? { base: 31, ext: 0, total: 31 } : { base: 30, ext: 20, total: 30 };
}

/**
 * Produces unique identifiers within one directory. Candidates are offered in a fixed order (the caller sorts by
 * source name), so collisions always resolve the same way and images stay reproducible.
 */
export class NameAllocator {
  private readonly taken = new Set<string>();

  /** ISO 9660 identifier, e.g. `README.TXT;1` for a file or `DOCS` for a directory. */
  iso(name: string, isDir: boolean, level: IsoLevel): string {
    const limits = isoLimits(level, isDir);
    const parts = isDir ? { base: name, ext: "" } : splitExtension(name);
    const ext = toDCharacters(parts.ext).slice(0, limits.ext);
    const maxBase = Math.min(limits.base, limits.total - ext.length);
    const base = toDCharacters(parts.base).slice(0, maxBase) || "_";
    const key = this.unique(base, maxBase, (b) => (ext ? `${b}.${ext}` : b));
    return isDir ? key : `${key}${ext ? "" : "."};1`;
  }

  /** Joliet identifier (before UCS-2 encoding): forbidden characters and non-BMP characters become `_`. */
  joliet(name: string, isDir: boolean): string {
    const cleaned = name.replace(SURROGATE_PAIR, "_").replace(JOLIET_FORBIDDEN, "_");
    const parts = isDir ? { base: cleaned, ext: "" } : splitExtension(cleaned);
    const ext = parts.ext.length > 0 && parts.ext.length < JOLIET_MAX / 2 ? parts.ext : "";
    const base = ext ? parts.base : cleaned;
    const maxBase = JOLIET_MAX - (ext ? ext.length + 1 : 0);
    const key = this.unique(base.slice(0, maxBase), maxBase, (b) => (ext ? `${b}.${ext}` : b));
    return isDir ? key : `${key};1`;
  }

  private unique(base: string, maxBase: number, compose: (base: string) => string): string {
    let candidate = compose(base);
    for (let n = 1; this.taken.has(candidate); n++) {
      const suffix = String(n);
      candidate = compose(base.slice(0, Math.max(0, maxBase - suffix.length)) + suffix);
    }
    this.taken.add(candidate);
    return candidate;
  }
}

/** Splits an identifier into the parts ECMA-119 9.3 orders by; directory identifiers are a single part. */
function sortParts(id: string, isDir: boolean): [string, string, number] {
  if (isDir) return [id, "", 0];
  const semi = id.lastIndexOf(";");
  const body = semi >= 0 ? id.slice(0, semi) : id;
  const version = semi >= 0 ? Number(id.slice(semi + 1)) : 0;
  const { base, ext } = splitExtension(body);
  return [base, ext, version];
}

/** Compares two strings code unit by code unit, the shorter padded with spaces (9.3 a/b). */
function comparePadded(a: string, b: string): number {
  const n = Math.max(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const ca = i < a.length ? a.charCodeAt(i) : 0x20;
    const cb = i < b.length ? b.charCodeAt(i) : 0x20;
    if (ca !== cb) return ca - cb;
  }
  return 0;
}

/**
 * ECMA-119 9.3 order of directory records (Joliet applies it to UCS-2 code units). Identifiers that differ
 * only in trailing spaces tie under 9.3; plain code unit order breaks the tie so the order is total.
 */
export function compareIdentifiers(a: string, aIsDir: boolean, b: string, bIsDir: boolean): number {
  const pa = sortParts(a, aIsDir);
  const pb = sortParts(b, bIsDir);
  return (
    comparePadded(pa[0], pb[0]) ||
    comparePadded(pa[1], pb[1]) ||
    pb[2] - pa[2] ||
    (a < b ? -1 : a > b ? 1 : 0)
  );
}
