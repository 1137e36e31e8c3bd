import { mkdir, readdir, rename, rm, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { ioError } from "./errors.js";
import { fsyncDir } from "./fsutil.js";

/**
 * A content-addressed store: each entry is a directory named after the SHA-256 of what was published (an asset
 * or an artifact zip), holding the verified, possibly decompressed or extracted, result. An entry appears only
 * by an atomic rename of a finished staging directory, so its presence means it is complete and verified.
 */
export class ImageCache {
  readonly root: string;

  constructor(root: string) {
    this.root = resolve(root);
  }

  entryPath(sha256: string): string {
    return join(this.root, `sha256-${sha256.toLowerCase()}`);
  }

  /** The entry directory for this digest, if present. */
  async lookup(sha256: string): Promise<string | undefined> {
    const path = this.entryPath(sha256);
    try {
      return (await stat(path)).isDirectory() ? path : undefined;
    } catch {
      return undefined;
    }
  }

  /**
   * A staging directory for one download. The name is stable (derived from `key`) so an interrupted download's
   * `.part` file is found and resumed by the next run.
   */
  async staging(key: string): Promise<string> {
    const path = join(this.root, ".staging", key.replace(/[^\w.-]/g, "_"));
    try {
      await mkdir(path, { recursive: true });
    } catch (err) {
      throw ioError(err, `creating ${path}`);
    }
    return path;
  }

  /** Moves a finished directory into the cache under its digest; an entry already there wins. */
  async commit(dir: string, sha256: string): Promise<string> {
    const entry = this.entryPath(sha256);
    const existing = await this.lookup(sha256);
    if (existing) {
      await rm(dir, { recursive: true, force: true });
      return existing;
    }
    try {
      await rename(dir, entry);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // Another process committed the same content between our lookup and rename.
      if ((code === "ENOTEMPTY" || code === "EEXIST") && (await this.lookup(sha256))) {
        await rm(dir, { recursive: true, force: true });
        return entry;
      }
      throw ioError(err, `moving ${dir} into the cache`);
    }
    await fsyncDir(this.root);
    return entry;
  }

  async remove(sha256: string): Promise<void> {
    await rm(this.entryPath(sha256), { recursive: true, force: true });
  }

  /** Digests of the complete entries. */
  async list(): Promise<string[]> {
    let names: string[];
    try {
      names = await readdir(this.root);
    } catch {
      return [];
    }
    return names
      .map((n) => /^sha256-([0-9a-f]{64})$/.exec(n)?.[1])
      .filter((d): d is string => d !== undefined)
      .sort();
  }
}
