// The layout pass: from the tree's metadata alone, compute every name, record, path table and extent, and
// encode all sectors before the first file's data. Pure: no I/O, no clock.

import {
  type DirectoryRecordFields,
  dirDate,
  directoryRecord,
  FLAG_DIRECTORY,
  FLAG_MULTI_EXTENT,
  pathTableRecord,
  recordBaseLength,
  recordLength,
  SECTOR,
  sectorsFor,
  terminatorDescriptor,
  ucs2be,
  volumeDescriptor,
  writeDirectoryRecord,
} from "./encode.js";
import { IsoError } from "./errors.js";
import { compareIdentifiers, type IsoLevel, NameAllocator } from "./names.js";
import {
  CE_LENGTH,
  ceEntry,
  clEntry,
  erEntry,
  nmEntries,
  plEntry,
  pxEntry,
  reEntry,
  slEntries,
  spEntry,
  splitSystemUse,
  tfEntry,
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

interface Member {
  node: TreeNode;
  kind: MemberKind;
  id: string;
  /** The identifier as recorded, encoded once for both passes. */
  bytes?: Buffer;
  /** Rock Ridge entries of the record that do not depend on locations, built once for both passes. */
  su?: Buffer[];
}

/** A directory of one hierarchy (primary or Joliet) with its records' targets in sorted order. */
interface LaidDir {
  node: DirNode;
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
  fileExtent: Map<FileNode, number>;
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

function sum(buffers: Buffer[]): number {
  let n = 0;
  for (const b of buffers) n += b.length;
  return n;
}

const NO_ENTRIES: Buffer[] = [];

/** Lays records out in sectors (none crossing a boundary) and returns each record's offset and the sector count. */
function packRecords(records: DirectoryRecordFields[]): { offsets: number[]; sectors: number } {
  const offsets: number[] = [];
  let pos = 0;
  for (const r of records) {
    const length = recordLength(r);
    const inSector = pos % SECTOR;
    if (inSector + length > SECTOR) pos += SECTOR - inSector;
    offsets.push(pos);
    pos += length;
  }
  return { offsets, sectors: Math.max(1, sectorsFor(pos)) };
}

function compareNodes(a: { node: TreeNode }, b: { node: TreeNode }): number {
  const an = a.node.name;
  const bn = b.node.name;
  if (an !== bn) return an < bn ? -1 : 1;
  return a.node.path < b.node.path ? -1 : a.node.path > b.node.path ? 1 : 0;
}

function sortedChildren(dir: DirNode): TreeNode[] {
  return [...dir.children.values()].sort((a, b) => compareNodes({ node: a }, { node: b }));
}

function isDirRecord(m: Member): boolean {
  return m.node.type === "dir" && m.kind !== "placeholder";
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
    for (const m of dir.members) if (isDirRecord(m)) order.push(byNode.get(m.node as DirNode)!);
  }
  if (order.length > MAX_DIRECTORIES)
    throw new IsoError(
      "TOO_MANY_DIRECTORIES",
      `The ${what} tree has ${order.length} directories; ISO 9660 path tables hold at most ${MAX_DIRECTORIES}.`,
    );
  return order;
}

function checkFileSizes(dir: DirNode, level: IsoLevel, maxExtent: number): void {
  for (const child of dir.children.values()) {
    if (child.type === "dir") checkFileSizes(child, level, maxExtent);
    else if (child.type === "file" && child.size > maxExtent && level < 3)
      throw new IsoError(
        "FILE_TOO_LARGE",
        `File "${child.path}" has ${child.size} bytes; files of 4 GiB or more need isoLevel 3 (multi-extent).`,
        { path: child.path },
      );
  }
}

function maxDepth(dir: DirNode, level: number): { depth: number; path: string } {
  let deepest = { depth: level, path: dir.path };
  for (const child of dir.children.values()) {
    if (child.type !== "dir") continue;
    const d = maxDepth(child, level + 1);
    if (d.depth > deepest.depth) deepest = d;
  }
  return deepest;
}

/** Builds the primary hierarchy, moving directories deeper than eight levels under rr_moved (RRIP 4.1.5). */
function primaryTree(
  root: DirNode,
  opts: LayoutOptions,
): { dirs: LaidDir[]; byNode: Map<DirNode, LaidDir>; rrMoved: LaidDir | null } {
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
    node: DirNode,
    parent: LaidDir | null,
    realParent: DirNode | null,
    generation: number,
  ): LaidDir => {
    const laid: LaidDir = {
      node,
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
  const rootDir = make(root, null, null, 0);
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
    rrMoved = make(newDir(name, name, opts.date), rootDir, null, 0);
    rrMoved.node.implicit = false;
  }
  // Members are collected breadth-first so each directory's level is known when its children are placed.
  const queue: { dir: DirNode; laid: LaidDir; level: number }[] = [{ dir: root, laid: rootDir, level: 1 }];
  const visit = (dir: DirNode, laid: LaidDir, level: number) => {
    for (const child of sortedChildren(dir)) {
      if (child.type === "symlink" && !opts.rockRidge) continue;
      if (child.type === "dir" && level + 1 > MAX_LEVELS) {
        laid.members.push({ node: child, kind: "placeholder", id: "" });
        rrMoved!.members.push({ node: child, kind: "relocated", id: "" });
        const moved = make(child, rrMoved, dir, laid.generation + 1);
        queue.push({ dir: child, laid: moved, level: 3 });
        continue;
      }
      laid.members.push({ node: child, kind: "normal", id: "" });
      if (child.type === "dir")
        queue.push({ dir: child, laid: make(child, laid, null, laid.generation), level: level + 1 });
    }
  };
  for (let i = 0; i < queue.length; i++) {
    const { dir, laid, level } = queue[i]!;
    visit(dir, laid, level);
    if (laid === rootDir && rrMoved !== null)
      laid.members.push({ node: rrMoved.node, kind: "normal", id: "" });
  }
  for (const laid of byNode.values()) {
    const names = new NameAllocator();
    const ordered = [...laid.members].sort(compareNodes);
    for (const m of ordered) {
      m.id = names.iso(m.node.name, m.node.type === "dir", opts.level);
      if (isDirRecord(m)) byNode.get(m.node as DirNode)!.id = m.id;
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

function jolietTree(root: DirNode): LaidDir[] {
  const byNode = new Map<DirNode, LaidDir>();
  const build = (node: DirNode, parent: LaidDir | null, id: string): LaidDir => {
    const laid: LaidDir = {
      node,
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
    for (const child of sortedChildren(node)) {
      if (child.type === "symlink") continue;
      const m: Member = { node: child, kind: "normal", id: names.joliet(child.name, child.type === "dir") };
      laid.members.push(m);
      if (child.type === "dir") build(child, laid, m.id);
    }
    sortMembers(laid.members);
    return laid;
  };
  return numberDirectories(build(root, null, ""), byNode, "Joliet");
}

/** Serial numbers and link counts for Rock Ridge PX entries, assigned in a fixed depth-first order. */
function posixIdentity(
  root: DirNode,
  extra: DirNode | null,
): { serial: Map<TreeNode, number>; links: (n: TreeNode) => number } {
  const serial = new Map<TreeNode, number>();
  const walk = (node: TreeNode) => {
    serial.set(node, serial.size + 1);
    if (node.type === "dir") for (const c of sortedChildren(node)) walk(c);
  };
  walk(root);
  if (extra !== null) serial.set(extra, serial.size + 1);
  const links = (n: TreeNode) => {
    if (n.type !== "dir") return 1;
    let dirs = 0;
    for (const c of n.children.values()) if (c.type === "dir") dirs++;
    return 2 + dirs;
  };
  return { serial, links };
}

type Extents = { max: number; section: number };

/** Encodes one directory's records, given the locations known so far and where its continuation areas go. */
type EncodeDir = (dir: LaidDir, loc: Locations, ce: ContinuationAreas) => DirectoryRecordFields[];

/** What a record needs that does not depend on locations, encoded once and shared by both passes. */
interface Invariants {
  dateOf(date: Date): { record: Buffer; tf: Buffer };
  /** PX and TF of `node`, followed by `extra`. */
  suFor(node: TreeNode, extra: Buffer[]): Buffer[];
  /** NM, and SL for a symlink. */
  namesFor(node: TreeNode): Buffer[];
  /** The Rock Ridge entries of a member's record (RE for a relocated directory). */
  memberSu(m: Member): Buffer[];
}

function invariants(root: DirNode, primary: { rrMoved: LaidDir | null }): Invariants {
  const rrMovedNode = primary.rrMoved;
  const identity = posixIdentity(root, rrMovedNode?.node ?? null);
  const rrMovedLinks = rrMovedNode ? 2 + rrMovedNode.members.length : 0;
  const links = (n: TreeNode) => (n === rrMovedNode?.node ? rrMovedLinks : identity.links(n));

  const dates = new Map<number, { record: Buffer; tf: Buffer }>();
  const dateOf = (date: Date) => {
    let cached = dates.get(date.getTime());
    if (cached === undefined) {
      cached = { record: dirDate(date), tf: tfEntry(date) };
      dates.set(date.getTime(), cached);
    }
    return cached;
  };
  const posix = new Map<TreeNode, Buffer[]>();
  const suFor = (node: TreeNode, extra: Buffer[]): Buffer[] => {
    let base = posix.get(node);
    if (base === undefined) {
      const type = node.type === "dir" ? S_IFDIR : node.type === "file" ? S_IFREG : S_IFLNK;
      const px = pxEntry({
        mode: type | node.mode,
        links: links(node),
        uid: 0,
        gid: 0,
        serial: identity.serial.get(node)!,
      });
      base = [px, dateOf(node.mtime).tf];
      posix.set(node, base);
    }
    return extra.length === 0 ? base : [...base, ...extra];
  };
  const namesFor = (node: TreeNode): Buffer[] =>
    node.type === "symlink" ? [...nmEntries(node.name), ...slEntries(node.target)] : nmEntries(node.name);
  const memberSu = (m: Member): Buffer[] => {
    m.su ??= suFor(m.node, m.kind === "relocated" ? [...namesFor(m.node), reEntry()] : namesFor(m.node));
    return m.su;
  };
  return { dateOf, suFor, namesFor, memberSu };
}

type RecordFields = (
  identifier: Buffer,
  extent: number,
  size: number,
  date: Date,
  flags: number,
  su: Buffer[] | null,
  ce: ContinuationAreas,
) => DirectoryRecordFields;

/** One directory record; system use that does not fit goes to continuation areas reserved in `ce`. */
function recordFields(dateOf: Invariants["dateOf"]): RecordFields {
  return (identifier, extent, size, date, flags, su, ce) => {
    const recorded = dateOf(date).record;
    if (su === null) return { extent, size, date: recorded, flags, identifier, systemUse: NO_ENTRIES };
    const room = 254 - recordBaseLength(identifier.length);
    if (sum(su) <= room) return { extent, size, date: recorded, flags, identifier, systemUse: su };
    const fields = { extent, size, date: recorded, flags, identifier };
    const split = splitSystemUse(su, room);
    const areas = split.continuation;
    const lengths = areas.map((a, k) => sum(a) + (k < areas.length - 1 ? CE_LENGTH : 0));
    const places = lengths.map((l) => ce.reserve(l));
    areas.forEach((area, k) => {
      const next = places[k + 1];
      const link = next === undefined ? [] : [ceEntry(next.extent, next.offset, lengths[k + 1]!)];
      ce.write(places[k]!, Buffer.concat([...area, ...link]));
    });
    const first = ceEntry(places[0]!.extent, places[0]!.offset, lengths[0]!);
    return { ...fields, systemUse: [...split.inline, first] };
  };
}

/** The record encoders of both hierarchies. */
function recordEncoders(
  opts: LayoutOptions,
  extents: Extents,
  joliet: LaidDir[],
  shared: Invariants,
): { primaryRecords: EncodeDir; jolietRecords: EncodeDir } {
  const { suFor, namesFor, memberSu } = shared;
  const record = recordFields(shared.dateOf);

  /** Appends the records of one file: several sections when it exceeds one extent (level 3 only, checked above). */
  const fileRecords = (
    out: DirectoryRecordFields[],
    id: Buffer,
    node: FileNode,
    loc: Locations,
    su: Buffer[] | null,
    ce: ContinuationAreas,
  ): void => {
    const extent = node.size === 0 ? loc.zeroBlock : loc.fileExtent.get(node)!;
    if (node.size <= extents.max) {
      out.push(record(id, extent, node.size, node.mtime, 0, su, ce));
      return;
    }
    for (let offset = 0; offset < node.size; offset += extents.section) {
      const size = Math.min(extents.section, node.size - offset);
      const last = offset + size >= node.size;
      out.push(record(id, extent + offset / SECTOR, size, node.mtime, last ? 0 : FLAG_MULTI_EXTENT, su, ce));
    }
  };

  const primaryRecords: EncodeDir = (dir, loc, ce) => {
    const rr = opts.rockRidge;
    const isRoot = dir.parent === null;
    const parent = dir.parent ?? dir;
    const dot = record(
      Buffer.from([0]),
      dir.extent,
      dir.sectors * SECTOR,
      dir.node.mtime,
      FLAG_DIRECTORY,
      rr ? (isRoot ? [spEntry(), ...suFor(dir.node, []), erEntry()] : suFor(dir.node, [])) : null,
      ce,
    );
    const realParent = dir.realParent === null ? parent.node : dir.realParent;
    const pl = dir.realParent === null ? [] : [plEntry(loc.isoDir.get(dir.realParent)!.extent)];
    const dotdot = record(
      Buffer.from([1]),
      parent.extent,
      parent.sectors * SECTOR,
      parent.node.mtime,
      FLAG_DIRECTORY,
      rr ? suFor(realParent, pl) : null,
      ce,
    );
    const out = [dot, dotdot];
    for (const m of dir.members) {
      m.bytes ??= Buffer.from(m.id, "latin1");
      const id = m.bytes;
      const node = m.node;
      if (node.type === "file") {
        fileRecords(out, id, node, loc, rr ? memberSu(m) : null, ce);
      } else if (node.type === "symlink") {
        out.push(record(id, loc.zeroBlock, 0, node.mtime, 0, memberSu(m), ce));
      } else {
        const target = loc.isoDir.get(node)!;
        if (m.kind === "placeholder") {
          const su = suFor(node, [...namesFor(node), clEntry(target.extent)]);
          out.push(record(id, loc.zeroBlock, 0, node.mtime, 0, su, ce));
        } else {
          const su = rr ? memberSu(m) : null;
          out.push(record(id, target.extent, target.sectors * SECTOR, node.mtime, FLAG_DIRECTORY, su, ce));
        }
      }
    }
    return out;
  };

  const jolietByNode = new Map(joliet.map((d) => [d.node, d]));
  const jolietRecords: EncodeDir = (dir, loc, ce) => {
    const parent = dir.parent ?? dir;
    const out = [
      record(Buffer.from([0]), dir.extent, dir.sectors * SECTOR, dir.node.mtime, FLAG_DIRECTORY, null, ce),
      record(
        Buffer.from([1]),
        parent.extent,
        parent.sectors * SECTOR,
        parent.node.mtime,
        FLAG_DIRECTORY,
        null,
        ce,
      ),
    ];
    for (const m of dir.members) {
      m.bytes ??= ucs2be(m.id);
      const id = m.bytes;
      if (m.node.type === "file") fileRecords(out, id, m.node, loc, null, ce);
      else {
        const target = jolietByNode.get(m.node as DirNode)!;
        out.push(record(id, target.extent, target.sectors * SECTOR, m.node.mtime, FLAG_DIRECTORY, null, ce));
      }
    }
    return out;
  };

  return { primaryRecords, jolietRecords };
}

/**
 * Pass 1: record sizes do not depend on locations, so encoding with dummy locations sizes every directory and
 * its continuation areas.
 */
function sizeDirectories(
  primary: { dirs: LaidDir[]; byNode: Map<DirNode, LaidDir> },
  joliet: LaidDir[],
  encoders: { primaryRecords: EncodeDir; jolietRecords: EncodeDir },
): void {
  const sizing: Locations = {
    isoDir: primary.byNode,
    fileExtent: new Map(),
    zeroBlock: 0,
  };
  const noCe = new ContinuationAreas(0, null);
  for (const d of primary.dirs) {
    const sizingCe = new ContinuationAreas(0, null);
    d.sectors = packRecords(encoders.primaryRecords(d, sizing, sizingCe)).sectors;
    d.ceSectors = sizingCe.used;
  }
  for (const d of joliet) d.sectors = packRecords(encoders.jolietRecords(d, sizing, noCe)).sectors;
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
  fileExtent: Map<FileNode, number>;
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
  const fileExtent = new Map<FileNode, number>();
  for (const d of primary.dirs) {
    for (const m of d.members) {
      if (m.node.type !== "file" || m.node.size === 0) continue;
      files.push({ node: m.node, sector: next });
      fileExtent.set(m.node, next);
      next += sectorsFor(m.node.size);
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
    fileExtent,
    totalSectors,
  };
}

/** Pass 3, directories: encodes each with real locations into `metadata`, checking it kept its pass-1 size. */
function writeDirectories(metadata: Buffer, dirs: LaidDir[], encode: EncodeDir, loc: Locations): void {
  for (const d of dirs) {
    const ce = new ContinuationAreas(d.extent + d.sectors, metadata);
    const records = encode(d, loc, ce);
    const packed = packRecords(records);
    if (packed.sectors !== d.sectors || ce.used !== d.ceSectors)
      throw new Error(`internal: directory ${d.node.path} changed size`);
    for (const [i, r] of records.entries())
      writeDirectoryRecord(metadata, d.extent * SECTOR + packed.offsets[i]!, r);
  }
}

function rootRecord(dirs: LaidDir[]): Buffer {
  return directoryRecord({
    extent: dirs[0]!.extent,
    size: dirs[0]!.sectors * SECTOR,
    date: dirDate(dirs[0]!.node.mtime),
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
  const primary = primaryTree(root, opts);
  const joliet = opts.joliet ? jolietTree(root) : [];
  const encoders = recordEncoders(opts, extents, joliet, invariants(root, primary));
  sizeDirectories(primary, joliet, encoders);
  const at = allocateSectors(primary, joliet, opts.joliet);
  const metadata = Buffer.alloc((at.zeroBlock + 1) * SECTOR);
  const loc: Locations = { isoDir: primary.byNode, fileExtent: at.fileExtent, zeroBlock: at.zeroBlock };
  writeDirectories(metadata, primary.dirs, encoders.primaryRecords, loc);
  writeDirectories(metadata, joliet, encoders.jolietRecords, loc);
  writeDescriptorsAndPathTables(metadata, opts, primary.dirs, joliet, at);
  return { metadata, files: at.files, totalSectors: at.totalSectors };
}
