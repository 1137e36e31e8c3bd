// An ISO 9660 reader written for the tests, separately from the writer: it decodes every both-endian field
// from both halves and fails on any mismatch, and checks the structural rules readers rely on.

import { closeSync, fstatSync, openSync, readSync } from "node:fs";

const SECTOR = 2048;

export type ReadAt = (offset: number, length: number) => Buffer;

export function bufferReader(image: Buffer): ReadAt {
  return (offset, length) => {
    if (offset + length > image.length) throw new Error(`read past end of image at ${offset}+${length}`);
    return image.subarray(offset, offset + length);
  };
}

/** Reads a (possibly huge, sparse) image file on demand; call `close` when done. */
export function fileReader(path: string): { read: ReadAt; size: number; close: () => void } {
  const fd = openSync(path, "r");
  const size = fstatSync(fd).size;
  return {
    size,
    read: (offset, length) => {
      if (offset + length > size) throw new Error(`read past end of image at ${offset}+${length}`);
      const out = Buffer.alloc(length);
      readSync(fd, out, 0, length, offset);
      return out;
    },
    close: () => closeSync(fd),
  };
}

function fail(message: string): never {
  throw new Error(`ISO check failed: ${message}`);
}

export function both32(b: Buffer, at: number, what: string): number {
  const le = b.readUInt32LE(at);
  const be = b.readUInt32BE(at + 4);
  if (le !== be) fail(`${what}: little-endian ${le} != big-endian ${be}`);
  return le;
}

export function both16(b: Buffer, at: number, what: string): number {
  const le = b.readUInt16LE(at);
  const be = b.readUInt16BE(at + 2);
  if (le !== be) fail(`${what}: little-endian ${le} != big-endian ${be}`);
  return le;
}

export interface Record {
  extent: number;
  size: number;
  flags: number;
  identifier: Buffer;
  date: Buffer;
  systemUse: Buffer;
  /** Absolute byte offset of the record, for sector-boundary checks. */
  offset: number;
}

export interface RockRidge {
  name?: string;
  mode?: number;
  links?: number;
  serial?: number;
  symlink?: string;
  mtime?: Date;
  childLink?: number;
  parentLink?: number;
  relocated: boolean;
  hasSp: boolean;
  er?: string;
}

export interface Node {
  path: string;
  isDir: boolean;
  size: number;
  /** Extents of every section (more than one for multi-extent files). */
  extents: { extent: number; size: number }[];
  rr?: RockRidge;
  children?: Node[];
}

export interface Volume {
  type: 1 | 2;
  volumeId: string;
  spaceSize: number;
  pathTableSize: number;
  lPathTable: number;
  mPathTable: number;
  root: Record;
}

function parseRecord(b: Buffer, at: number, absolute: number, what: string): Record {
  const len = b[at]!;
  if (len < 34) fail(`${what}: record length ${len} < 34`);
  if (len % 2 !== 0) fail(`${what}: odd record length ${len}`);
  if (b[at + 1] !== 0) fail(`${what}: extended attribute length not 0`);
  const idLen = b[at + 32]!;
  const suStart = 33 + idLen + (idLen % 2 === 0 ? 1 : 0);
  if (suStart > len) fail(`${what}: identifier overruns the record`);
  if (idLen % 2 === 0 && b[at + 33 + idLen] !== 0) fail(`${what}: pad byte is not zero`);
  both16(b, at + 28, `${what} volume sequence number`);
  const date = b.subarray(at + 18, at + 25);
  if (date[6] !== 0) fail(`${what}: time zone offset ${date[6]} leaks a local zone`);
  return {
    extent: both32(b, at + 2, `${what} extent`),
    size: both32(b, at + 10, `${what} data length`),
    flags: b[at + 25]!,
    identifier: b.subarray(at + 33, at + 33 + idLen),
    date,
    systemUse: b.subarray(at + suStart, at + len),
    offset: absolute,
  };
}

export function parseVolume(read: ReadAt, sector: number): Volume | null {
  const d = read(sector * SECTOR, SECTOR);
  if (d.subarray(1, 6).toString("latin1") !== "CD001") fail(`sector ${sector}: no CD001 signature`);
  const type = d[0]!;
  if (type === 255) return null;
  if (type !== 1 && type !== 2) return parseVolume(read, sector + 1);
  const joliet = type === 2;
  if (joliet && d.subarray(88, 91).toString("latin1") !== "%/E")
    fail("SVD escape sequence is not %/E (UCS-2 level 3)");
  const what = joliet ? "SVD" : "PVD";
  if (both16(d, 128, `${what} block size`) !== SECTOR) fail(`${what} block size`);
  both16(d, 120, `${what} volume set size`);
  both16(d, 124, `${what} volume sequence number`);
  const idField = d.subarray(40, 72);
  const volumeId = (joliet ? decodeUcs2(idField) : idField.toString("latin1")).replace(/ +$/, "");
  for (const at of [813, 830]) {
    if (!/^\d{16}$/.test(d.subarray(at, at + 16).toString("latin1")))
      fail(`${what} date at ${at} not digits`);
    if (d[at + 16] !== 0) fail(`${what} date at ${at} has a time zone offset`);
  }
  if (d[881] !== 1) fail(`${what} file structure version`);
  return {
    type,
    volumeId,
    spaceSize: both32(d, 80, `${what} volume space size`),
    pathTableSize: both32(d, 132, `${what} path table size`),
    lPathTable: d.readUInt32LE(140),
    mPathTable: d.readUInt32BE(148),
    root: parseRecord(d, 156, sector * SECTOR + 156, `${what} root record`),
  };
}

export function decodeUcs2(b: Buffer): string {
  let s = "";
  for (let i = 0; i + 1 < b.length; i += 2) s += String.fromCharCode(b.readUInt16BE(i));
  return s;
}

function splitId(id: string, isDir: boolean): [string, string, number] {
  if (isDir) return [id, "", 0];
  const semi = id.lastIndexOf(";");
  const body = semi >= 0 ? id.slice(0, semi) : id;
  const version = semi >= 0 ? Number.parseInt(id.slice(semi + 1), 10) : 0;
  const dot = body.lastIndexOf(".");
  return dot <= 0 ? [body, "", version] : [body.slice(0, dot), body.slice(dot + 1), version];
}

function padCompare(a: string, b: string): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const d = (a.charCodeAt(i) || 0x20) - (b.charCodeAt(i) || 0x20);
    if (d !== 0) return d;
  }
  return 0;
}

/** ECMA-119 9.3 ordering, reimplemented here from the standard's text. */
export function ecmaOrder(a: string, aDir: boolean, b: string, bDir: boolean): number {
  const x = splitId(a, aDir);
  const y = splitId(b, bDir);
  return padCompare(x[0], y[0]) || padCompare(x[1], y[1]) || y[2] - x[2];
}

const CE_SIG = "CE";

/** Decodes a system use area, following CE continuations (each must sit inside one sector). */
function parseSystemUse(read: ReadAt, su: Buffer, what: string): RockRidge {
  const rr: RockRidge = { relocated: false, hasSp: false };
  let nm = "";
  let sl: string[] = [];
  let slPending = "";
  let area: Buffer | null = su;
  let hops = 0;
  while (area !== null) {
    let next: Buffer | null = null;
    let i = 0;
    while (i + 4 <= area.length) {
      const sig = area.subarray(i, i + 2).toString("latin1");
      const len = area[i + 2]!;
      if (len === 0) break;
      if (i + len > area.length) fail(`${what}: SUSP entry ${sig} overruns its area`);
      const body = area.subarray(i + 4, i + len);
      switch (sig) {
        case "SP":
          rr.hasSp = true;
          if (body[0] !== 0xbe || body[1] !== 0xef) fail(`${what}: bad SP check bytes`);
          break;
        case CE_SIG: {
          const extent = both32(body, 0, `${what} CE extent`);
          const offset = both32(body, 8, `${what} CE offset`);
          const length = both32(body, 16, `${what} CE length`);
          if (offset + length > SECTOR) fail(`${what}: continuation area crosses a sector boundary`);
          if (i + len !== area.length && area[i + len] !== 0 && area.length - (i + len) >= 4)
            fail(`${what}: CE is not the last entry of its area`);
          next = read(extent * SECTOR + offset, length);
          break;
        }
        case "PX":
          if (len !== 44) fail(`${what}: PX length ${len}, expected 44 (with serial number)`);
          rr.mode = both32(body, 0, `${what} PX mode`);
          rr.links = both32(body, 8, `${what} PX links`);
          both32(body, 16, `${what} PX uid`);
          both32(body, 24, `${what} PX gid`);
          rr.serial = both32(body, 32, `${what} PX serial`);
          break;
        case "NM":
          nm += body.subarray(1).toString("utf8");
          if ((body[0]! & 1) === 0) rr.name = nm;
          break;
        case "SL": {
          let j = 1;
          while (j < body.length) {
            const flags = body[j]!;
            const clen = body[j + 1]!;
            const content = body.subarray(j + 2, j + 2 + clen).toString("utf8");
            if (flags & 0x08) sl.push("");
            else if (flags & 0x02) sl.push(".");
            else if (flags & 0x04) sl.push("..");
            else {
              slPending += content;
              if ((flags & 1) === 0) {
                sl.push(slPending);
                slPending = "";
              }
            }
            j += 2 + clen;
          }
          if ((body[0]! & 1) === 0) {
            rr.symlink = sl.length === 1 && sl[0] === "" ? "/" : sl.join("/");
            sl = [];
          }
          break;
        }
        case "TF": {
          const flags = body[0]!;
          if (flags & 0x80) fail(`${what}: unexpected long-form TF`);
          if (flags & 0x02) {
            const at = (flags & 0x01 ? 7 : 0) + 1;
            const t = body.subarray(at, at + 7);
            rr.mtime = new Date(Date.UTC(1900 + t[0]!, t[1]! - 1, t[2]!, t[3]!, t[4]!, t[5]!));
          }
          break;
        }
        case "CL":
          rr.childLink = both32(body, 0, `${what} CL`);
          break;
        case "PL":
          rr.parentLink = both32(body, 0, `${what} PL`);
          break;
        case "RE":
          rr.relocated = true;
          break;
        case "ER":
          rr.er = body.subarray(4, 4 + body[0]!).toString("latin1");
          break;
        default:
          break;
      }
      i += len;
    }
    area = next;
    if (++hops > 32) fail(`${what}: CE chain too long`);
  }
  return rr;
}

export interface ParsedTree {
  volume: Volume;
  root: Node;
  /** Every directory in breadth-first order with its extent, as the path tables must list them. */
  dirs: { id: string; extent: number; parent: number; level: number }[];
}

/** Reads a whole hierarchy, checking layout rules on the way. `rr` decodes Rock Ridge from the primary tree. */
export function readTree(read: ReadAt, volume: Volume, opts: { rr: boolean }): ParsedTree {
  const joliet = volume.type === 2;
  const decodeId = (b: Buffer) => (joliet ? decodeUcs2(b) : b.toString("latin1"));
  const dirs: ParsedTree["dirs"] = [];
  const seenExtents = new Set<number>();

  const readDir = (rec: Record, path: string, parentExtent: number, level: number, number: number): Node => {
    if (rec.size % SECTOR !== 0) fail(`${path || "/"}: directory length ${rec.size} is not whole sectors`);
    if (seenExtents.has(rec.extent)) fail(`${path || "/"}: directory extent ${rec.extent} visited twice`);
    seenExtents.add(rec.extent);
    const data = read(rec.extent * SECTOR, rec.size);
    const records: Record[] = [];
    let pos = 0;
    while (pos < data.length) {
      const len = data[pos]!;
      if (len === 0) {
        const rest = data.subarray(pos, (Math.floor(pos / SECTOR) + 1) * SECTOR);
        if (rest.some((x) => x !== 0))
          fail(`${path || "/"}: non-zero bytes after the last record of a sector`);
        pos = (Math.floor(pos / SECTOR) + 1) * SECTOR;
        continue;
      }
      if (Math.floor(pos / SECTOR) !== Math.floor((pos + len - 1) / SECTOR))
        fail(`${path || "/"}: record at ${pos} crosses a sector boundary`);
      records.push(
        parseRecord(data, pos, rec.extent * SECTOR + pos, `${path || "/"} record ${records.length}`),
      );
      pos += len;
    }
    const [dot, dotdot, ...rest] = records;
    if (dot === undefined || dot.identifier.length !== 1 || dot.identifier[0] !== 0)
      fail(`${path}: first record is not "."`);
    if (dot.extent !== rec.extent || dot.size !== rec.size)
      fail(`${path || "/"}: "." does not point at itself`);
    if (dotdot === undefined || dotdot.identifier.length !== 1 || dotdot.identifier[0] !== 1)
      fail(`${path}: second record is not ".."`);
    if (dotdot.extent !== parentExtent)
      fail(`${path || "/"}: ".." points at ${dotdot.extent}, not ${parentExtent}`);
    const dotRr = opts.rr ? parseSystemUse(read, dot.systemUse, `${path || "/"}/.`) : undefined;
    if (opts.rr && level === 1 && (!dotRr?.hasSp || dotRr.er === undefined))
      fail("root '.' record lacks SP or ER, so readers will not see Rock Ridge");
    const dotdotRr = opts.rr ? parseSystemUse(read, dotdot.systemUse, `${path || "/"}/..`) : undefined;
    for (let i = 1; i < rest.length; i++) {
      const a = rest[i - 1]!;
      const b = rest[i]!;
      const order = ecmaOrder(
        decodeId(a.identifier),
        (a.flags & 2) !== 0,
        decodeId(b.identifier),
        (b.flags & 2) !== 0,
      );
      const sameFile = order === 0 && a.identifier.equals(b.identifier) && (a.flags & 0x80) !== 0;
      // Identifiers differing only in trailing spaces tie under 9.3; they must then be in code unit order.
      const tieOk =
        order === 0 && !a.identifier.equals(b.identifier) && Buffer.compare(a.identifier, b.identifier) < 0;
      if (order > 0 || (order === 0 && !sameFile && !tieOk))
        fail(
          `${path || "/"}: records "${decodeId(a.identifier)}" and "${decodeId(b.identifier)}" out of ECMA-119 order`,
        );
    }
    const node: Node = {
      path,
      isDir: true,
      size: rec.size,
      extents: [{ extent: rec.extent, size: rec.size }],
      children: [],
      ...(dotRr
        ? {
            rr: {
              ...dotRr,
              ...(dotdotRr?.parentLink === undefined ? {} : { parentLink: dotdotRr.parentLink }),
            },
          }
        : {}),
    };
    const subdirs: { rec: Record; path: string }[] = [];
    for (let i = 0; i < rest.length; i++) {
      const r = rest[i]!;
      const id = decodeId(r.identifier);
      const rr = opts.rr ? parseSystemUse(read, r.systemUse, `${path}/${id}`) : undefined;
      const childPath = `${path}/${id}`;
      if (r.flags & 2) {
        subdirs.push({ rec: r, path: childPath });
        node.children!.push({
          path: childPath,
          isDir: true,
          size: r.size,
          extents: [{ extent: r.extent, size: r.size }],
          ...(rr ? { rr } : {}),
        });
        continue;
      }
      const extents = [{ extent: r.extent, size: r.size }];
      let flags = r.flags;
      while (flags & 0x80) {
        const n = rest[++i];
        if (n === undefined || decodeId(n.identifier) !== id)
          fail(`${childPath}: multi-extent file lacks its next section`);
        const prev = extents[extents.length - 1]!;
        if (prev.size % SECTOR !== 0) fail(`${childPath}: a non-final section is not whole sectors`);
        if (n.extent !== prev.extent + prev.size / SECTOR) fail(`${childPath}: sections are not contiguous`);
        extents.push({ extent: n.extent, size: n.size });
        flags = n.flags;
      }
      node.children!.push({
        path: childPath,
        isDir: false,
        size: extents.reduce((s, e) => s + e.size, 0),
        extents,
        ...(rr ? { rr } : {}),
      });
    }
    // Children are numbered in path table order after the whole level above, so read them breadth-first later.
    pending.push(
      ...subdirs.map((s) => ({
        ...s,
        parentExtent: rec.extent,
        level: level + 1,
        parentNumber: number,
        node,
      })),
    );
    return node;
  };

  type Pending = {
    rec: Record;
    path: string;
    parentExtent: number;
    level: number;
    parentNumber: number;
    node: Node;
  };
  const pending: Pending[] = [];
  const root = readDir(volume.root, "", volume.root.extent, 1, 1);
  dirs.push({ id: "\0", extent: volume.root.extent, parent: 1, level: 1 });
  for (let i = 0; i < pending.length; i++) {
    const p = pending[i]!;
    dirs.push({
      id: p.path.slice(p.path.lastIndexOf("/") + 1),
      extent: p.rec.extent,
      parent: p.parentNumber,
      level: p.level,
    });
    const child = readDir(p.rec, p.path, p.parentExtent, p.level, dirs.length);
    const slot = p.node.children!.findIndex((c) => c.path === p.path);
    p.node.children![slot] = {
      ...child,
      ...(p.node.children![slot]!.rr
        ? { rr: { ...child.rr, ...p.node.children![slot]!.rr } as RockRidge }
        : {}),
    };
  }
  return { volume, root, dirs };
}

/** Checks the L and M path tables against each other and against the directories actually found. */
export function checkPathTables(read: ReadAt, tree: ParsedTree): void {
  const { volume } = tree;
  const joliet = volume.type === 2;
  const decode = (b: Buffer) => (joliet && b.length > 1 ? decodeUcs2(b) : b.toString("latin1"));
  const parseTable = (sector: number, bigEndian: boolean) => {
    const data = read(sector * SECTOR, volume.pathTableSize);
    const out: { id: string; extent: number; parent: number }[] = [];
    let i = 0;
    while (i < data.length) {
      const len = data[i]!;
      if (len === 0) fail("path table record of length 0");
      const extent = bigEndian ? data.readUInt32BE(i + 2) : data.readUInt32LE(i + 2);
      const parent = bigEndian ? data.readUInt16BE(i + 6) : data.readUInt16LE(i + 6);
      out.push({ id: decode(data.subarray(i + 8, i + 8 + len)), extent, parent });
      i += 8 + len + (len % 2);
    }
    if (i !== data.length) fail("path table size does not match its records");
    return out;
  };
  const l = parseTable(volume.lPathTable, false);
  const m = parseTable(volume.mPathTable, true);
  if (JSON.stringify(l) !== JSON.stringify(m)) fail("L and M path tables differ");
  if (l.length !== tree.dirs.length)
    fail(`path table lists ${l.length} directories, the tree has ${tree.dirs.length}`);
  for (let i = 0; i < l.length; i++) {
    const want = tree.dirs[i]!;
    const got = l[i]!;
    const wantId = want.id;
    if (got.extent !== want.extent || got.parent !== want.parent || got.id !== wantId)
      fail(`path table record ${i + 1}: ${JSON.stringify(got)} but the tree has ${JSON.stringify(want)}`);
    if (i > 0) {
      const prev = tree.dirs[i - 1]!;
      const prevGot = l[i - 1]!;
      const ordered =
        prev.level < want.level ||
        (prev.level === want.level &&
          (prevGot.parent < got.parent ||
            (prevGot.parent === got.parent &&
              (padCompare(prevGot.id, got.id) || (prevGot.id < got.id ? -1 : 1)) < 0)));
      if (!ordered) fail(`path table records ${i} and ${i + 1} are out of order`);
    }
  }
}

/** Everything one image holds, checked: volumes, trees, path tables, and that data lies inside the volume. */
export function inspect(read: ReadAt, imageSize: number) {
  if (imageSize % SECTOR !== 0) fail(`image size ${imageSize} is not whole sectors`);
  const primary = parseVolume(read, 16);
  if (primary === null || primary.type !== 1) fail("sector 16 is not a primary volume descriptor");
  if (primary.spaceSize * SECTOR !== imageSize)
    fail(`volume space size ${primary.spaceSize} sectors, image has ${imageSize / SECTOR}`);
  const svd = parseVolume(read, 17);
  const rr = read(primary.root.extent * SECTOR, 4)[0]! > 34;
  const iso = readTree(read, primary, { rr });
  checkPathTables(read, iso);
  let joliet: ParsedTree | undefined;
  if (svd !== null) {
    if (svd.spaceSize !== primary.spaceSize) fail("SVD and PVD disagree on the volume size");
    joliet = readTree(read, svd, { rr: false });
    checkPathTables(read, joliet);
  }
  const serials = new Map<number, string>();
  const walk = (n: Node) => {
    for (const e of n.extents)
      if (e.extent * SECTOR + e.size > imageSize)
        fail(`${n.path}: extent ${e.extent}+${e.size} beyond the image`);
    if (rr && n.rr?.serial !== undefined && !n.rr.relocated && n.rr.childLink === undefined) {
      const other = serials.get(n.rr.serial);
      if (other !== undefined && other !== n.path)
        fail(`PX serial ${n.rr.serial} shared by ${other} and ${n.path}`);
      serials.set(n.rr.serial, n.path);
    }
    for (const c of n.children ?? []) walk(c);
  };
  walk(iso.root);
  return { primary, svd, rr, iso, joliet };
}

export function inspectBuffer(image: Buffer) {
  return inspect(bufferReader(image), image.length);
}

export interface ViewEntry {
  type: "file" | "dir" | "symlink";
  mode?: number;
  size: number;
  target?: string;
  mtime?: Date;
  extents: { extent: number; size: number }[];
}

function indexDirs(n: Node, byExtent: Map<number, Node>): void {
  if (n.isDir) byExtent.set(n.extents[0]!.extent, n);
  for (const c of n.children ?? []) indexDirs(c, byExtent);
}

/** The POSIX view a Rock Ridge reader shows: NM names, relocated directories put back, rr_moved hidden. */
export function rockRidgeView(tree: ParsedTree): Map<string, ViewEntry> {
  const byExtent = new Map<number, Node>();
  indexDirs(tree.root, byExtent);
  const out = new Map<string, ViewEntry>();
  const walk = (dir: Node, prefix: string, depth: number) => {
    if (depth > 64) fail("Rock Ridge relocation loops");
    for (const child of dir.children ?? []) {
      const rr = child.rr;
      if (rr === undefined || rr.name === undefined) fail(`${child.path}: no NM entry`);
      if (rr.relocated) continue;
      const path = prefix ? `${prefix}/${rr.name}` : rr.name;
      if (out.has(path)) continue; // later sections of a multi-extent file
      let target = child;
      if (rr.childLink !== undefined) {
        const moved = byExtent.get(rr.childLink);
        if (moved === undefined) fail(`${child.path}: CL points at ${rr.childLink}, which is no directory`);
        if (moved.rr?.parentLink !== dir.extents[0]!.extent)
          fail(`${child.path}: relocated directory's PL is wrong`);
        target = moved;
      }
      const type = target.isDir ? "dir" : rr.symlink !== undefined ? "symlink" : "file";
      const isRrMoved =
        prefix === "" &&
        type === "dir" &&
        (target.children ?? []).length > 0 &&
        target.children!.every((c) => c.rr?.relocated);
      if (isRrMoved) continue;
      out.set(path, {
        type,
        size: target.size,
        extents: target.extents,
        ...(rr.mode === undefined ? {} : { mode: rr.mode }),
        ...(rr.symlink === undefined ? {} : { target: rr.symlink }),
        ...(rr.mtime === undefined ? {} : { mtime: rr.mtime }),
      });
      if (target.isDir) walk(target, path, depth + 1);
    }
  };
  walk(tree.root, "", 0);
  return out;
}

/** The plain view of a tree without Rock Ridge: identifiers with the ";1" version removed. */
export function plainView(tree: ParsedTree): Map<string, ViewEntry> {
  const out = new Map<string, ViewEntry>();
  const walk = (dir: Node, prefix: string) => {
    for (const child of dir.children ?? []) {
      const raw = child.path.slice(child.path.lastIndexOf("/") + 1);
      const name = child.isDir ? raw : raw.replace(/;1$/, "");
      const path = prefix ? `${prefix}/${name}` : name;
      if (out.has(path)) fail(`${path}: two records share one name`);
      out.set(path, { type: child.isDir ? "dir" : "file", size: child.size, extents: child.extents });
      if (child.isDir) walk(child, path);
    }
  };
  walk(tree.root, "");
  return out;
}

export function readExtents(read: ReadAt, entry: ViewEntry): Buffer {
  return Buffer.concat(entry.extents.map((e) => read(e.extent * SECTOR, e.size)));
}
