import { closeSync, openSync, readSync } from "node:fs";

/**
 * The backing file a qcow2 image names in its header (an overlay's base), read straight from the file: what it
 * depends on, whatever recorded it and whichever version of this CLI made it. Undefined for a disk without one or a
 * file that is not qcow2.
 */
export function backingFileOf(path: string): string | undefined {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch {
    return undefined;
  }
  try {
    const header = Buffer.alloc(20);
    if (readSync(fd, header, 0, 20, 0) < 20 || header.readUInt32BE(0) !== 0x514649fb) return undefined;
    const offset = header.readBigUInt64BE(8);
    const size = header.readUInt32BE(16);
    if (offset === 0n || size === 0 || size > 4096) return undefined;
    const name = Buffer.alloc(size);
    readSync(fd, name, 0, size, Number(offset));
    return name.toString("utf8");
  } finally {
    closeSync(fd);
  }
}
