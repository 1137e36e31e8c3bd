// The layout pass: from the tree's metadata alone, compute every name, record, path table and extent, and
// encode all sectors before the first file's data. Pure: no I/O, no clock.

import {
  dirDate,
  directoryRecord,
  FLAG_DIRECTORY,
  FLAG_MULTI_EXTENT,
  pathTableRecord,
  recordBaseLength,
  SECTOR,
  sectorsFor,
  terminatorDescriptor,
  ucs2be,
  volumeDescriptor,
  writeRecordHeader,
  writeUcs2be,
  writeUtf8,
} from "./encode.js";
import { IsoError } from "./errors.js";
import { compareIdentifiers, type IsoLevel, NameAllocator } from "./names.js";
import {
  CE_LENGTH,
  ceEntry,
  clEntry,
  erEntry,
  nmEntries,
  nmLength,
  PX_LENGTH,
  plEntry,
  pxEntry,
  reEntry,
  slEntries,
  spEntry,
  splitSystemUse,
  TF_LENGTH,
  tfEntry,
  writeNm,
  writePx,
  writeTf,
} from "./rockridge.js";
import { type DirNode, type FileNode, newDir, type TreeNode } from "./tree.js";

export interface LayoutOptions {
  volumeId: string;
  level: IsoLevel;
  joliet: boolean;
  rockRidge: boolean;
  date: Date;
  /**
   * Largest single extent and the size of each section of a larger file. Only tests change it, to exercise
   * multi-extent files with small data; the default is what ECMA-119 allows.
   */
  extents?: { max: number; section: number };
}

export interface PlannedFile {
  node: FileNode;
  /** First sector of the file's data; files are contiguous and in ascending order. */
  sector: number;
}

export interface Plan {
  /** Every sector before the first file's data: system area, descriptors, path tables, directories. */
  metadata: Buffer;
  files: PlannedFile[];
  totalSectors: number;
}

/** ECMA-119 6.8.2.1: at most eight directory levels, the root being the first. */
const MAX_LEVELS = 8;
/** Path table records number their parent with 16 bits. */
const MAX_DIRECTORIES = 0xffff;
/** Largest extent of a multi-extent file: 4 GiB less one sector, so every section starts on a sector. */
export const SECTION_SIZE = 0xfffff800;
const MAX_SINGLE_EXTENT = 0xffffffff;
const DEFAULT_EXTENTS = { max: MAX_SINGLE_EXTENT, section: SECTION_SIZE };
const FIRST_DESCRIPTOR = 16;
const MIN_SECTORS = FIRST_DESCRIPTOR + 8;

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;

type MemberKind = "normal" | "placeholder" | "relocated";

/** A tree node with what the layout assigns it, shared by the records of both hierarchies. */
interface Item {
  node: TreeNode;
  /** Rock Ridge serial number (PX): depth-first order of the sorted tree. */
  serial: number;
  /** Rock Ridge link count (PX): 2 and the subdirectories for a directory, else 1. */
  links: number;
  /** The node's mtime as a 7-byte recording date, shared by every record and TF entry that gives it. */
  date: Buffer;
  /** First sector of a file's data. */
  extent: number;
  /** A directory's children in name order. */
  children: Item[];
}

interface Member {
  item: Item;
  kind: MemberKind;
  id: string;
}

/** A directory of one hierarchy (primary or Joliet) with its records' targets in sorted order. */
interface LaidDir {
  node: DirNode;
  item: Item;
  parent: LaidDir | null;
  id: string;
  members: Member[];
  number: number;
  extent: number;
  sectors: number;
  /**
   * Sectors of Rock Ridge continuation areas placed right after the directory: libarchive reads them only
   * when they directly follow the directory that points to them.
   */
  ceSectors: number;
  /**
   * How many relocations lie between the root and this directory; relocated subtrees are laid out before
   * the regular tree (see extentOrder).
   */
  generation: number;
  /** For a directory moved under rr_moved: the directory it really belongs to. */
  realParent: DirNode | null;
}

interface Locations {
  isoDir: Map<DirNode, LaidDir>;
  zeroBlock: number;
}

/** Packs continuation areas into whole sectors, none crossing a sector boundary. */
class ContinuationAreas {
  private sector: number;
  private offset = 0;
  used = 0;

  constructor(
    private readonly start: number,
    private readonly out: Buffer | null,
  ) {
    this.sector = start;
  }

  reserve(length: number): { extent: number; offset: number } {
    if (this.offset + length > SECTOR) {
      this.sector++;
      this.offset = 0;
    }
    const at = { extent: this.sector, offset: this.offset };
    this.offset += length;
    this.used = this.sector - this.start + 1;
    return at;
  }

  write(at: { extent: number; offset: number }, bytes: Buffer): void {
    if (this.out !== null) bytes.copy(this.out, at.extent * SECTOR + at.offset);
  }
}

// Loops over what a layout has per file are indexed: until V8 optimizes the code, for...of allocates an
// iterator result per element, the largest share of a 20,000-file layout's garbage.

function sum(buffers: Buffer[]): number {
  let n = 0;
  for (let i = 0; i < buffers.length; i++) n += buffers[i]!.length;
  return n;
}

const NO_ENTRIES: Buffer[] = [];
const DOT = "\x00";
const DOTDOT = "\x01";

function compareMembers(a: Member, b: Member): number {
  const an = a.item.node.name;
  const bn = b.item.node.name;
  if (an !== bn) return an < bn ? -1 : 1;
  const ap = a.item.node.path;
  const bp = b.item.node.path;
  return ap < bp ? -1 : ap > bp ? 1 : 0;
}

const NO_ITEMS: Item[] = [];

/** The items of `root`'s tree, children in name order, numbered depth-first from 1. */
function itemTree(root: DirNode, dates: RecordingDates): { root: Item; count: number } {
  let count = 0;
  const make = (node: TreeNode): Item => {
    const date = dates.of(node.mtimeMs);
    const item: Item = { node, serial: ++count, links: 1, date, extent: 0, children: NO_ITEMS };
    if (node.type === "dir") {
      // Names are unique within a directory, so the name alone orders them.
      const sorted = [...node.children.values()].sort((a, b) => (a.name < b.name ? -1 : 1));
      item.children = sorted.map(make);
      item.links = 2;
      for (let i = 0; i < sorted.length; i++) if (sorted[i]!.type === "dir") item.links++;
    }
    return item;
  };
  return { root: make(root), count };
}

function isDirRecord(m: Member): boolean {
  return m.item.node.type === "dir" && m.kind !== "placeholder";
}

function sortMembers(members: Member[]): void {
  members.sort((a, b) => compareIdentifiers(a.id, isDirRecord(a), b.id, isDirRecord(b)));
}

/** Numbers directories breadth-first, which is the path table order of ECMA-119 6.9.1. */
function numberDirectories(root: LaidDir, byNode: Map<DirNode, LaidDir>, what: string): LaidDir[] {
  const order: LaidDir[] = [root];
  for (let i = 0; i < order.length; i++) {
    const dir = order[i]!;
    dir.number = i + 1;
    const members = dir.members;
    for (let k = 0; k < members.length; k++)
      if (isDirRecord(members[k]!)) order.push(byNode.get(members[k]!.item.node as DirNode)!);
  }
  if (order.length > MAX_DIRECTORIES)
    throw new IsoError(
      "TOO_MANY_DIRECTORIES",
      `The ${what} tree has ${order.length} directories; ISO 9660 path tables hold at most ${MAX_DIRECTORIES}.`,
    );
  return order;
}

function checkFileSizes(dir: DirNode, level: IsoLevel, maxExtent: number): void {
  dir.children.forEach((child) => {
    if (child.type === "dir") checkFileSizes(child, level, maxExtent);
    else if (child.type === "file" && child.size > maxExtent && level < 3)
      throw new IsoError(
        "FILE_TOO_LARGE",
        `File "${child.path}" has ${child.size} bytes; files of 4 GiB or more need isoLevel 3 (multi-extent).`,
        { path: child.path },
      );
  });
}

function maxDepth(dir: DirNode, level: number): { depth: number; path: string } {
  let deepest = { depth: level, path: dir.path };
  dir.children.forEach((child) => {
    if (child.type !== "dir") return;
    const d = maxDepth(child, level + 1);
    if (d.depth > deepest.depth) deepest = d;
  });
  return deepest;
}

/** Builds the primary hierarchy, moving directories deeper than eight levels under rr_moved (RRIP 4.1.5). */
function primaryTree(
  items: { root: Item; count: number },
  opts: LayoutOptions,
  dates: RecordingDates,
): { dirs: LaidDir[]; byNode: Map<DirNode, LaidDir>; rrMoved: LaidDir | null } {
  const root = items.root.node as DirNode;
  const deepest = maxDepth(root, 1);
  const relocate = deepest.depth > MAX_LEVELS;
  if (relocate && !opts.rockRidge)
    throw new IsoError(
      "TOO_DEEP",
      `Directory "${deepest.path}" is ${deepest.depth} levels deep; ISO 9660 allows ${MAX_LEVELS}. Enable rockRidge (which relocates deep directories) or flatten the tree.`,
      { path: deepest.path },
    );
  const byNode = new Map<DirNode, LaidDir>();
  const make = (
    item: Item,
    parent: LaidDir | null,
    realParent: DirNode | null,
    generation: number,
  ): LaidDir => {
    const node = item.node as DirNode;
    const laid: LaidDir = {
      node,
      item,
      parent,
      id: "",
      members: [],
      number: 0,
      extent: 0,
      sectors: 0,
      ceSectors: 0,
      generation,
      realParent,
    };
    byNode.set(node, laid);
    return laid;
  };
  const rootDir = make(items.root, null, null, 0);
  let rrMoved: LaidDir | null = null;
  if (relocate) {
    // libarchive takes the first root directory named rr_moved or .rr_moved for the relocation directory,
    // so a source directory of either name would capture the relocated ones.
    const name = "rr_moved";
    const taken = [name, ".rr_moved"].find((n) => root.children.has(n));
    if (taken !== undefined)
      throw new IsoError(
        "TOO_DEEP",
        `Directory "${deepest.path}" is ${deepest.depth} levels deep and must be relocated, but the source has its own "${taken}" at the root, which readers would mistake for the relocation directory. Rename it or flatten the tree.`,
        { path: taken },
      );
    const node = newDir(name, name, opts.date.getTime());
    node.implicit = false;
    // Links are counted once the relocated directories are known.
    const date = dates.of(node.mtimeMs);
    const item: Item = { node, serial: items.count + 1, links: 2, date, extent: 0, children: NO_ITEMS };
    rrMoved = make(item, rootDir, null, 0);
  }
  // Members are collected breadth-first so each directory's level is known when its children are placed.
  const queue: { laid: LaidDir; level: number }[] = [{ laid: rootDir, level: 1 }];
  const visit = (laid: LaidDir, level: number) => {
    const children = laid.item.children;
    for (let i = 0; i < children.length; i++) {
      const child = children[i]!;
      const type = child.node.type;
      if (type === "symlink" && !opts.rockRidge) continue;
      if (type === "dir" && level + 1 > MAX_LEVELS) {
        laid.members.push({ item: child, kind: "placeholder", id: "" });
        rrMoved!.members.push({ item: child, kind: "relocated", id: "" });
        const moved = make(child, rrMoved, laid.node, laid.generation + 1);
        queue.push({ laid: moved, level: 3 });
        continue;
      }
      laid.members.push({ item: child, kind: "normal", id: "" });
      if (type === "dir") queue.push({ laid: make(child, laid, null, laid.generation), level: level + 1 });
    }
  };
  for (let i = 0; i < queue.length; i++) {
    const { laid, level } = queue[i]!;
    visit(laid, level);
    if (laid === rootDir && rrMoved !== null)
      laid.members.push({ item: rrMoved.item, kind: "normal", id: "" });
  }
  if (rrMoved !== null) rrMoved.item.links += rrMoved.members.length;
  for (const laid of byNode.values()) {
    const names = new NameAllocator();
    // Names are given out in source name order; the records are then put in identifier order.
    const members = laid.members.sort(compareMembers);
    for (let i = 0; i < members.length; i++) {
      const m = members[i]!;
      const node = m.item.node;
      m.id = names.iso(node.name, node.type === "dir", opts.level);
      if (isDirRecord(m)) byNode.get(node as DirNode)!.id = m.id;
    }
    sortMembers(laid.members);
  }
  return { dirs: numberDirectories(rootDir, byNode, "ISO 9660"), byNode, rrMoved };
}

/**
 * Order of directory extents: root, rr_moved, the relocated subtrees, then the rest. libarchive reads
 * directories in extent order and can attach a nested relocation only while the outermost relocated directory
 * around it is still detached, which it stays until the reader reaches that directory's placeholder in the
 * regular tree.
 */
function extentOrder(primary: { dirs: LaidDir[]; rrMoved: LaidDir | null }): LaidDir[] {
  const { dirs, rrMoved } = primary;
  if (rrMoved === null) return dirs;
  const rest = dirs.slice(1).filter((d) => d !== rrMoved);
  return [
    dirs[0]!,
    rrMoved,
    ...rest.filter((d) => d.generation > 0),
    ...rest.filter((d) => d.generation === 0),
  ];
}

function jolietTree(root: Item): LaidDir[] {
  const byNode = new Map<DirNode, LaidDir>();
  const build = (item: Item, parent: LaidDir | null, id: string): LaidDir => {
    const node = item.node as DirNode;
    const laid: LaidDir = {
      node,
      item,
      parent,
      id,
      members: [],
      number: 0,
      extent: 0,
      sectors: 0,
      ceSectors: 0,
      generation: 0,
      realParent: null,
    };
    byNode.set(node, laid);
    const names = new NameAllocator();
    for (let i = 0; i < item.children.length; i++) {
      const child = item.children[i]!;
      const { type, name } = child.node;
      if (type === "symlink") continue;
      const m: Member = { item: child, kind: "normal", id: names.joliet(name, type === "dir") };
      laid.members.push(m);
      if (type === "dir") build(child, laid, m.id);
    }
    sortMembers(laid.members);
    return laid;
  };
  return numberDirectories(build(root, null, ""), byNode, "Joliet");
}

/** Recording dates, encoded once per distinct time: trees tend to share a few. */
class RecordingDates {
  private readonly encoded = new Map<number, Buffer>();

  of(timeMs: number): Buffer {
    let bytes = this.encoded.get(timeMs);
    if (bytes === undefined) {
      bytes = dirDate(new Date(timeMs));
      this.encoded.set(timeMs, bytes);
    }
    return bytes;
  }
}

/** The Rock Ridge entries of one record: `first`, the PX and TF of `item`, the NM of `name`, then `extra`. */
interface SystemUse {
  item: Item;
  first: Buffer | null;
  name: string | null;
  extra: Buffer[];
}

function systemUse(item: Item, name: string | null, extra: Buffer[]): SystemUse {
  return { item, first: null, name, extra };
}

function posixMode(node: TreeNode): number {
  return (node.type === "dir" ? S_IFDIR : node.type === "file" ? S_IFREG : S_IFLNK) | node.mode;
}

function suLength(su: SystemUse): number {
  const named = su.name === null ? 0 : nmLength(su.name);
  return (su.first?.length ?? 0) + PX_LENGTH + TF_LENGTH + named + sum(su.extra);
}

/** Writes the entries at `at`; the record must have room for all of them. */
function writeSystemUse(out: Buffer, at: number, su: SystemUse): void {
  if (su.first !== null) at += su.first.copy(out, at);
  const item = su.item;
  writePx(out, at, posixMode(item.node), item.links, 0, 0, item.serial);
  writeTf(out, at + PX_LENGTH, item.date);
  at += PX_LENGTH + TF_LENGTH;
  if (su.name !== null) {
    writeNm(out, at, su.name);
    at += nmLength(su.name);
  }
  for (let i = 0; i < su.extra.length; i++) at += su.extra[i]!.copy(out, at);
}

/** The entries one by one, for a record whose system use must be split over continuation areas. */
function systemUseEntries(su: SystemUse): Buffer[] {
  const { node, links, serial, date } = su.item;
  return [
    ...(su.first === null ? [] : [su.first]),
    pxEntry({ mode: posixMode(node), links, uid: 0, gid: 0, serial }),
    tfEntry(date),
    ...(su.name === null ? [] : nmEntries(su.name)),
    ...su.extra,
  ];
}

/**
 * One directory's records: places each in the directory's sectors (none crossing a boundary) and, unless only
 * sizing (`out` null), encodes it straight into the metadata. Record sizes do not depend on locations, so
 * sizing with dummy locations gives the sectors the directory and its continuation areas take.
 */
class DirectoryRecords {
  private pos = 0;

  constructor(
    private readonly out: Buffer | null,
    private readonly start: number,
    readonly ce: ContinuationAreas,
  ) {}

  get sectors(): number {
    return Math.max(1, sectorsFor(this.pos));
  }

  /** One record; `ucs2` selects Joliet identifiers, and system use that does not fit goes to continuation areas. */
  add(
    id: string,
    ucs2: boolean,
    extent: number,
    size: number,
    date: Buffer,
    flags: number,
    su: SystemUse | null,
  ): void {
    const idLength = ucs2 ? 2 * id.length : id.length;
    const base = recordBaseLength(idLength);
    const room = 254 - base;
    let used = su === null ? 0 : suLength(su);
    let continued: Buffer[] | null = null;
    if (used > room) {
      continued = this.continue(systemUseEntries(su!), room);
      used = sum(continued);
    }
    const length = base + used + (used % 2);
    const inSector = this.pos % SECTOR;
    if (inSector + length > SECTOR) this.pos += SECTOR - inSector;
    const at = this.start + this.pos;
    this.pos += length;
    const out = this.out;
    if (out === null) return;
    writeRecordHeader(out, at, length, extent, size, date, flags, idLength);
    if (ucs2) writeUcs2be(out, at + 33, id);
    else writeUtf8(out, at + 33, id);
    if (continued !== null) {
      let pos = at + base;
      for (let i = 0; i < continued.length; i++) pos += continued[i]!.copy(out, pos);
    } else if (su !== null) writeSystemUse(out, at + base, su);
  }

  /** Keeps what fits in `room` and moves the rest to continuation areas; returns the record's entries. */
  private continue(entries: Buffer[], room: number): Buffer[] {
    const split = splitSystemUse(entries, room);
    const areas = split.continuation;
    const lengths = areas.map((a, k) => sum(a) + (k < areas.length - 1 ? CE_LENGTH : 0));
    const places = lengths.map((l) => this.ce.reserve(l));
    areas.forEach((area, k) => {
      const next = places[k + 1];
      const link = next === undefined ? [] : [ceEntry(next.extent, next.offset, lengths[k + 1]!)];
      this.ce.write(places[k]!, Buffer.concat([...area, ...link]));
    });
    return [...split.inline, ceEntry(places[0]!.extent, places[0]!.offset, lengths[0]!)];
  }
}

type Extents = { max: number; section: number };

/** Emits one directory's records, given the locations known so far. */
type EncodeDir = (dir: LaidDir, loc: Locations, records: DirectoryRecords) => void;

/** The record encoders of both hierarchies. */
function recordEncoders(
  opts: LayoutOptions,
  extents: Extents,
  joliet: LaidDir[],
): { primaryRecords: EncodeDir; jolietRecords: EncodeDir } {
  const rootEntries = opts.rockRidge ? { sp: spEntry(), er: erEntry() } : null;

  /** The records of one file: several sections when it exceeds one extent (level 3 only, checked above). */
  const fileRecords = (
    records: DirectoryRecords,
    id: string,
    ucs2: boolean,
    item: Item,
    loc: Locations,
    su: SystemUse | null,
  ): void => {
    const node = item.node as FileNode;
    const extent = node.size === 0 ? loc.zeroBlock : item.extent;
    if (node.size <= extents.max) {
      records.add(id, ucs2, extent, node.size, item.date, 0, su);
      return;
    }
    for (let offset = 0; offset < node.size; offset += extents.section) {
      const size = Math.min(extents.section, node.size - offset);
      const last = offset + size >= node.size;
      records.add(id, ucs2, extent + offset / SECTOR, size, item.date, last ? 0 : FLAG_MULTI_EXTENT, su);
    }
  };

  const primaryRecords: EncodeDir = (dir, loc, records) => {
    const parent = dir.parent ?? dir;
    let dotSu: SystemUse | null = null;
    let dotdotSu: SystemUse | null = null;
    if (rootEntries !== null) {
      dotSu =
        dir.parent === null
          ? { item: dir.item, first: rootEntries.sp, name: null, extra: [rootEntries.er] }
          : systemUse(dir.item, null, NO_ENTRIES);
      // A relocated directory's ".." is rr_moved, but its Rock Ridge attributes are its real parent's.
      const real = dir.realParent === null ? null : loc.isoDir.get(dir.realParent)!;
      dotdotSu =
        real === null
          ? systemUse(parent.item, null, NO_ENTRIES)
          : systemUse(real.item, null, [plEntry(real.extent)]);
    }
    records.add(DOT, false, dir.extent, dir.sectors * SECTOR, dir.item.date, FLAG_DIRECTORY, dotSu);
    const { extent, sectors, item: parentItem } = parent;
    records.add(DOTDOT, false, extent, sectors * SECTOR, parentItem.date, FLAG_DIRECTORY, dotdotSu);
    const rr = rootEntries !== null;
    const members = dir.members;
    for (let i = 0; i < members.length; i++) {
      const m = members[i]!;
      const item = m.item;
      const node = item.node;
      if (node.type === "file") {
        fileRecords(records, m.id, false, item, loc, rr ? systemUse(item, node.name, NO_ENTRIES) : null);
      } else if (node.type === "symlink") {
        const su = systemUse(item, node.name, slEntries(node.target));
        records.add(m.id, false, loc.zeroBlock, 0, item.date, 0, su);
      } else {
        const target = loc.isoDir.get(node)!;
        if (m.kind === "placeholder") {
          const su = systemUse(item, node.name, [clEntry(target.extent)]);
          records.add(m.id, false, loc.zeroBlock, 0, item.date, 0, su);
        } else {
          const extra = m.kind === "relocated" ? [reEntry()] : NO_ENTRIES;
          const su = rr ? systemUse(item, node.name, extra) : null;
          const size = target.sectors * SECTOR;
          records.add(m.id, false, target.extent, size, item.date, FLAG_DIRECTORY, su);
        }
      }
    }
  };

  const jolietByNode = new Map(joliet.map((d) => [d.node, d]));
  const jolietRecords: EncodeDir = (dir, loc, records) => {
    const parent = dir.parent ?? dir;
    records.add(DOT, false, dir.extent, dir.sectors * SECTOR, dir.item.date, FLAG_DIRECTORY, null);
    const { extent, sectors, item: parentItem } = parent;
    records.add(DOTDOT, false, extent, sectors * SECTOR, parentItem.date, FLAG_DIRECTORY, null);
    const members = dir.members;
    for (let i = 0; i < members.length; i++) {
      const { item, id } = members[i]!;
      if (item.node.type === "file") fileRecords(records, id, true, item, loc, null);
      else {
        const target = jolietByNode.get(item.node as DirNode)!;
        records.add(id, true, target.extent, target.sectors * SECTOR, item.date, FLAG_DIRECTORY, null);
      }
    }
  };

  return { primaryRecords, jolietRecords };
}

/** Pass 1: sizes every directory and its continuation areas by placing its records with dummy locations. */
function sizeDirectories(
  primary: { dirs: LaidDir[]; byNode: Map<DirNode, LaidDir> },
  joliet: LaidDir[],
  encoders: { primaryRecords: EncodeDir; jolietRecords: EncodeDir },
): void {
  const sizing: Locations = { isoDir: primary.byNode, zeroBlock: 0 };
  const size = (d: LaidDir, encode: EncodeDir) => {
    const records = new DirectoryRecords(null, 0, new ContinuationAreas(0, null));
    encode(d, sizing, records);
    d.sectors = records.sectors;
    d.ceSectors = records.ce.used;
  };
  for (const d of primary.dirs) size(d, encoders.primaryRecords);
  for (const d of joliet) size(d, encoders.jolietRecords);
}

function pathTable(dirs: LaidDir[], encode: (id: string) => Buffer, bigEndian: boolean): Buffer {
  return Buffer.concat(
    dirs.map((d) =>
      pathTableRecord(
        d.parent === null ? Buffer.from([0]) : encode(d.id),
        d.extent,
        (d.parent ?? d).number,
        bigEndian,
      ),
    ),
  );
}

const latin1 = (id: string) => Buffer.from(id, "latin1");

/** Where everything goes: path tables, directory extents (with their continuation areas), the zero block, files. */
interface Allocation {
  isoPathTableSize: number;
  jolietPathTableSize: number;
  /** First sectors of the L and M path tables of each hierarchy. */
  isoL: number;
  isoM: number;
  jolL: number;
  jolM: number;
  /** The shared sector empty files and symlinks point at: the last sector of the metadata. */
  zeroBlock: number;
  files: PlannedFile[];
  totalSectors: number;
}

/** Pass 2: allocate sectors. Sets every directory's extent. */
function allocateSectors(
  primary: { dirs: LaidDir[]; rrMoved: LaidDir | null },
  joliet: LaidDir[],
  withJoliet: boolean,
): Allocation {
  const isoPathTableSize = pathTable(primary.dirs, latin1, false).length;
  const jolietPathTableSize = withJoliet ? pathTable(joliet, ucs2be, false).length : 0;
  let next = FIRST_DESCRIPTOR + 1 + (withJoliet ? 1 : 0) + 1;
  const isoL = next;
  next += sectorsFor(isoPathTableSize);
  const isoM = next;
  next += sectorsFor(isoPathTableSize);
  const jolL = next;
  next += withJoliet ? sectorsFor(jolietPathTableSize) : 0;
  const jolM = next;
  next += withJoliet ? sectorsFor(jolietPathTableSize) : 0;
  for (const d of [...extentOrder(primary), ...joliet]) {
    d.extent = next;
    next += d.sectors + d.ceSectors;
  }
  const zeroBlock = next++;
  const files: PlannedFile[] = [];
  for (const d of primary.dirs) {
    for (let i = 0; i < d.members.length; i++) {
      const item = d.members[i]!.item;
      const node = item.node;
      if (node.type !== "file" || node.size === 0) continue;
      files.push({ node, sector: next });
      item.extent = next;
      next += sectorsFor(node.size);
    }
  }
  // libarchive recognises an image only when it can read 16 sectors past the system area.
  const totalSectors = Math.max(next, MIN_SECTORS);
  return {
    isoPathTableSize,
    jolietPathTableSize,
    isoL,
    isoM,
    jolL,
    jolM,
    zeroBlock,
    files,
    totalSectors,
  };
}

/** Pass 3, directories: encodes each with real locations into `metadata`, checking it kept its pass-1 size. */
function writeDirectories(metadata: Buffer, dirs: LaidDir[], encode: EncodeDir, loc: Locations): void {
  for (const d of dirs) {
    const ce = new ContinuationAreas(d.extent + d.sectors, metadata);
    const records = new DirectoryRecords(metadata, d.extent * SECTOR, ce);
    encode(d, loc, records);
    if (records.sectors !== d.sectors || ce.used !== d.ceSectors)
      throw new Error(`internal: directory ${d.node.path} changed size`);
  }
}

function rootRecord(dirs: LaidDir[]): Buffer {
  return directoryRecord({
    extent: dirs[0]!.extent,
    size: dirs[0]!.sectors * SECTOR,
    date: dirs[0]!.item.date,
    flags: FLAG_DIRECTORY,
    identifier: Buffer.from([0]),
  });
}

/** Pass 3, the rest: volume descriptors (primary, Joliet, terminator) and both path tables of each hierarchy. */
function writeDescriptorsAndPathTables(
  metadata: Buffer,
  opts: LayoutOptions,
  primaryDirs: LaidDir[],
  joliet: LaidDir[],
  at: Allocation,
): void {
  const common = { volumeSpaceSize: at.totalSectors, date: opts.date, systemId: "", applicationId: "" };
  let descriptor = FIRST_DESCRIPTOR;
  volumeDescriptor({
    ...common,
    type: 1,
    joliet: false,
    volumeId: opts.volumeId,
    pathTableSize: at.isoPathTableSize,
    lPathTable: at.isoL,
    mPathTable: at.isoM,
    rootRecord: rootRecord(primaryDirs),
  }).copy(metadata, descriptor++ * SECTOR);
  if (opts.joliet) {
    volumeDescriptor({
      ...common,
      type: 2,
      joliet: true,
      // The Joliet label field holds 16 UCS-2 characters.
      volumeId: opts.volumeId.slice(0, 16),
      pathTableSize: at.jolietPathTableSize,
      lPathTable: at.jolL,
      mPathTable: at.jolM,
      rootRecord: rootRecord(joliet),
    }).copy(metadata, descriptor++ * SECTOR);
  }
  terminatorDescriptor().copy(metadata, descriptor * SECTOR);
  pathTable(primaryDirs, latin1, false).copy(metadata, at.isoL * SECTOR);
  pathTable(primaryDirs, latin1, true).copy(metadata, at.isoM * SECTOR);
  if (opts.joliet) {
    pathTable(joliet, ucs2be, false).copy(metadata, at.jolL * SECTOR);
    pathTable(joliet, ucs2be, true).copy(metadata, at.jolM * SECTOR);
  }
}

export function layout(root: DirNode, opts: LayoutOptions): Plan {
  const extents = opts.extents ?? DEFAULT_EXTENTS;
  if (extents.section % SECTOR !== 0 || extents.section > extents.max)
    throw new Error("internal: sections must be whole sectors and fit in one extent");
  checkFileSizes(root, opts.level, extents.max);
  const dates = new RecordingDates();
  const items = itemTree(root, dates);
  const primary = primaryTree(items, opts, dates);
  const joliet = opts.joliet ? jolietTree(items.root) : [];
  const encoders = recordEncoders(opts, extents, joliet);
  sizeDirectories(primary, joliet, encoders);
  const at = allocateSectors(primary, joliet, opts.joliet);
  const metadata = Buffer.alloc((at.zeroBlock + 1) * SECTOR);
  const loc: Locations = { isoDir: primary.byNode, zeroBlock: at.zeroBlock };
  writeDirectories(metadata, primary.dirs, encoders.primaryRecords, loc);
  writeDirectories(metadata, joliet, encoders.jolietRecords, loc);
  writeDescriptorsAndPathTables(metadata, opts, primary.dirs, joliet, at);
  return { metadata, files: at.files, totalSectors: at.totalSectors };
}
