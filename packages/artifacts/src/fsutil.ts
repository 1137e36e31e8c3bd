import { randomBytes } from "node:crypto";
import { open, readFile, rename, rm, stat, statfs, writeFile } from "node:fs/promises";
import { ArtifactsError, ioError } from "./errors.js";
import { formatBytes } from "./progress.js";

export async function fileSize(path: string): Promise<number | undefined> {
  try {
    return (await stat(path)).size;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw ioError(err, `reading ${path}`);
  }
}

export async function fsyncFile(path: string): Promise<void> {
  const fh = await open(path, "r+");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Makes a completed rename durable; some file systems refuse to fsync a directory, which is harmless. */
export async function fsyncDir(dir: string): Promise<void> {
  let fh: Awaited<ReturnType<typeof open>> | undefined;
  try {
    fh = await open(dir, "r");
    await fh.sync();
  } catch {
    // Best effort by design: the data itself was fsynced before the rename.
  } finally {
    await fh?.close();
  }
}

export function tempSibling(path: string): string {
  return `${path}.${process.pid}-${randomBytes(4).toString("hex")}.tmp`;
}

/** `tmp` may be a fixed name when one process alone writes `path`: a killed writer then leaves no strays behind. */
export async function writeFileAtomic(path: string, data: string, tmp = tempSibling(path)): Promise<void> {
  try {
    await writeFile(tmp, data);
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw ioError(err, `writing ${path}`);
  }
}

export async function readJson<T>(path: string): Promise<T | undefined> {
  try {
    return JSON.parse(await readFile(path, "utf8")) as T;
  } catch {
    return undefined;
  }
}

export async function removeQuietly(...paths: (string | undefined)[]): Promise<void> {
  await Promise.all(
    paths.map((p) => (p ? rm(p, { force: true, recursive: true }).catch(() => {}) : undefined)),
  );
}

/**
 * Fails before the first byte rather than at 95 % of a multi-gigabyte download. `detail` says what `needed` is
 * made of, for the message.
 */
export async function ensureFreeSpace(dir: string, needed: number, detail?: string): Promise<void> {
  if (needed <= 0) return;
  let free: number;
  try {
    const s = await statfs(dir);
    free = s.bavail * s.bsize;
  } catch {
    return; // statfs is unsupported on some platforms and file systems; the write itself still reports ENOSPC.
  }
  if (free < needed) {
    throw new ArtifactsError(
      "NO_SPACE",
      `Not enough free space in ${dir}: ${formatBytes(needed)} needed${detail ? ` (${detail})` : ""}, ${formatBytes(free)} available. Free some space or download to another disk.`,
    );
  }
}
