import { createHash } from "node:crypto";
import { createWriteStream, fdatasync, type WriteStream } from "node:fs";
import { type FileHandle, open } from "node:fs/promises";
import { dirname } from "node:path";
import type { Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { DecompressStream } from "zstd-napi";
import { type ArtifactsError, ioError } from "./errors.js";
import { ensureFreeSpace } from "./fsutil.js";
import { formatBytes } from "./progress.js";
import { Ranges } from "./ranges.js";
import { release, SLAB_BYTES, takeSlab } from "./slabs.js";
import { ZSTD_HEADER_MAX, type Zstd, zstdContentSize } from "./zstd.js";

/** Writes in flight at once, in bytes: the disk's queue, bounded so a slow disk slows the network down. */
const MAX_WRITING = 16 << 20;
/**
 * Writeback starts while the download runs, so the fsync before the rename does not have to wait for a whole
 * image to reach the disk at the end. Failures are ignored there: the final fsync reports them.
 */
const SYNC_EVERY = 64 << 20;

export interface AssemblerOptions {
  /** The file the bytes as published go to, each at its offset. */
  partPath: string;
  /** Decompress the bytes, in order, into `path` with `zstd` (loaded by the caller: it is optional). */
  unpack?: { path: string; zstd: Zstd };
  /** Ranges of `partPath` that an earlier run left there; read back when the hash reaches them. */
  onDisk: Ranges;
  /** Called when `written` grew. */
  onWritten: () => void;
  /** Called when the contiguous prefix grew. */
  onAdvance: () => void;
}

/**
 * Where downloaded pieces go. Each piece is written at its offset as it arrives, in any order; the SHA-256 (and
 * the decompressor) must see the bytes in order, so pieces beyond the contiguous prefix wait in memory until the
 * prefix reaches them: no second read of the file. The session keeps that wait short by fetching pieces in order
 * within a bounded window. Bytes an earlier run left on disk are the exception: the hash state cannot be saved,
 * so they are read back once.
 */
export class Assembler {
  /** Ranges whose bytes are in the file: the earlier run's and this run's completed writes. */
  readonly written: Ranges;
  /** Bytes [0, frontier) have been hashed (and decompressed). */
  frontier = 0;
  /** Bytes in the file or on their way there. */
  received: number;
  total: number | undefined;
  /** Set when the decompressor refused the data: reported after the digest check, which explains more. */
  decompressError: Error | undefined;
  private fh: FileHandle | undefined;
  private readonly hash = createHash("sha256");
  /** Pieces beyond the prefix, by offset, with what releases them once every user is done. */
  private readonly waiting = new Map<number, { piece: Buffer; done: () => void }>();
  private writing = 0;
  private readonly writeback = new Writeback();
  private stopped = false;
  private failure: ArtifactsError | undefined;
  private wakeConsumer: (() => void) | undefined;
  private writeWaiters: (() => void)[] = [];
  private head = Buffer.alloc(0);
  private zstd:
    | { dec: DecompressStream; out: WriteStream; done: Promise<void>; writeback: Writeback }
    | undefined;
  /** Resolves when the prefix reached the end of the file. */
  consumed: Promise<void> = Promise.resolve();

  constructor(private readonly opts: AssemblerOptions) {
    this.written = new Ranges(opts.onDisk.intervals);
    this.received = opts.onDisk.size;
  }

  async open(total: number | undefined): Promise<void> {
    this.total = total;
    try {
      this.fh = await open(this.opts.partPath, this.opts.onDisk.empty ? "w+" : "r+");
    } catch (err) {
      throw ioError(err, `opening ${this.opts.partPath}`);
    }
    if (this.opts.unpack) this.startDecompressor(this.opts.unpack);
    this.consumed = this.consume();
    // A failure is also reported to whoever puts the next piece; this keeps it from being unhandled meanwhile.
    this.consumed.catch(() => {});
  }

  /**
   * Takes a piece at `offset`, and the caller's reference to its slab (see slabs.ts): released once the piece is
   * written, hashed and decompressed. Resolves when the disk queue has room for more.
   */
  async put(offset: number, piece: Buffer): Promise<void> {
    if (this.failure) throw this.failure;
    this.received += piece.length;
    this.writing += piece.length;
    const fh = this.fh!;
    // Done with the piece: the disk write, the hash, and the decompressor when there is one.
    const done = this.holder(piece, this.zstd ? 3 : 2);
    fh.write(piece, 0, piece.length, offset)
      .then(
        () => {
          this.written.add(offset, offset + piece.length);
          this.opts.onWritten();
          this.writeback.poke(fh.fd, this.written.size);
        },
        (err: unknown) => {
          this.failure ??= ioError(err, `writing ${this.opts.partPath}`);
          this.wake();
        },
      )
      .finally(() => {
        done();
        this.writing -= piece.length;
        for (const resume of this.writeWaiters.splice(0)) resume();
      });
    this.waiting.set(offset, { piece, done });
    this.wake();
    while (this.writing > MAX_WRITING && !this.failure) {
      await new Promise<void>((resume) => this.writeWaiters.push(resume));
    }
    if (this.failure) throw this.failure;
  }

  /** The file's size became known: the hash is complete once the prefix reaches it. */
  setTotal(total: number): void {
    this.total = total;
    this.wake();
  }

  /** Waits for the writes and the decompressor, and closes the files; then `digest()` is final. */
  async finish(): Promise<void> {
    try {
      await this.consumed;
      await this.settle();
      if (this.zstd && !this.decompressError) {
        this.zstd.dec.end();
        await this.zstd.done;
      }
      if (this.failure) throw this.failure;
      try {
        // An earlier run's .part may run on past the end (its state lists only what belongs to the file).
        await this.fh!.truncate(this.total);
      } catch (err) {
        throw ioError(err, `writing ${this.opts.partPath}`);
      }
    } finally {
      await this.close();
    }
  }

  digest(): string {
    return this.hash.digest("hex");
  }

  /** Stops: waits for the writes in flight (a late write would land in a restarted file) and closes the files. */
  async close(): Promise<void> {
    this.stopped = true;
    this.wake();
    await this.consumed.catch(() => {});
    await this.settle();
    await this.fh?.close().catch(() => {});
    this.fh = undefined;
    const zstd = this.zstd;
    this.zstd = undefined;
    if (zstd) {
      zstd.dec.destroy();
      zstd.out.destroy();
      await zstd.done;
    }
  }

  private async settle(): Promise<void> {
    while (this.writing > 0) await new Promise<void>((resume) => this.writeWaiters.push(resume));
  }

  private wake(): void {
    const wake = this.wakeConsumer;
    this.wakeConsumer = undefined;
    wake?.();
  }

  /** Feeds the hash (and the decompressor) in order: from memory, or from disk for an earlier run's ranges. */
  private async consume(): Promise<void> {
    for (;;) {
      if (this.failure) throw this.failure;
      if (this.stopped) return;
      if (this.total !== undefined && this.frontier >= this.total) return;
      const onDisk = this.opts.onDisk.around(this.frontier);
      const next = onDisk ? await this.readBack(onDisk[1]) : this.waiting.get(this.frontier);
      if (next) {
        this.waiting.delete(this.frontier);
        await this.feed(next.piece, next.done);
      } else {
        await new Promise<void>((resume) => {
          this.wakeConsumer = resume;
        });
      }
    }
  }

  /** Counts down the users of a piece; the last one releases its slab. */
  private holder(piece: Buffer, users: number): () => void {
    let left = users;
    return () => {
      if (--left === 0) release(piece);
    };
  }

  private async readBack(end: number): Promise<{ piece: Buffer; done: () => void }> {
    const length = Math.min(end - this.frontier, SLAB_BYTES);
    const buffer = takeSlab().subarray(0, length);
    try {
      const { bytesRead } = await this.fh!.read(buffer, 0, length, this.frontier);
      if (bytesRead !== length) throw new Error(`${this.opts.partPath} is shorter than its state says`);
    } catch (err) {
      throw ioError(err, `reading ${this.opts.partPath}`);
    }
    return { piece: buffer, done: this.holder(buffer, this.zstd ? 2 : 1) };
  }

  /** Hashes (and decompresses) the next piece of the prefix; `done` is called as each of them is through with it. */
  private async feed(piece: Buffer, done: () => void): Promise<void> {
    this.hash.update(piece);
    done();
    this.frontier += piece.length;
    this.opts.onAdvance();
    const zstd = this.zstd;
    if (!zstd || this.decompressError) return;
    if (this.head.length < ZSTD_HEADER_MAX) {
      this.head = Buffer.concat([this.head, piece.subarray(0, ZSTD_HEADER_MAX - this.head.length)]);
      if (this.head.length >= ZSTD_HEADER_MAX) await this.checkUnpackedSpace(zstdContentSize(this.head));
    }
    if (!zstd.dec.write(piece, done)) await drained(zstd.dec);
    // The stream's descriptor, which Node's types leave out; null until the file is open.
    const fd = (zstd.out as WriteStream & { fd: number | null }).fd;
    if (fd !== null) zstd.writeback.poke(fd, zstd.out.bytesWritten);
  }

  /** The decompressed size is known only once the frame header has arrived. */
  private async checkUnpackedSpace(unpacked: number | undefined): Promise<void> {
    if (unpacked === undefined || !this.opts.unpack) return;
    const stillCompressed = this.total === undefined ? 0 : this.total - this.written.size;
    await ensureFreeSpace(
      dirname(this.opts.unpack.path),
      unpacked + stillCompressed,
      `${formatBytes(stillCompressed)} still to download + ${formatBytes(unpacked)} unpacked, as the zstd frame header declares`,
    );
  }

  private startDecompressor({ path: outPath, zstd }: { path: string; zstd: Zstd }): void {
    const dec = new zstd.DecompressStream();
    const out = createWriteStream(outPath, { highWaterMark: 8 << 20 });
    // A corrupt stream is reported only after the digest check: a digest mismatch is the more useful diagnosis.
    dec.on("error", (err) => {
      this.decompressError ??= err;
    });
    out.on("error", (err) => {
      // pipeline() also destroys `out` with the decompressor's own error; that one is not an I/O failure.
      if (err !== this.decompressError) this.failure ??= ioError(err, `writing ${outPath}`);
    });
    const done = pipeline(dec, out).catch(() => {});
    this.zstd = { dec, out, done, writeback: new Writeback() };
  }
}

/** Starts a file's writeback every SYNC_EVERY bytes, one fdatasync at a time. */
class Writeback {
  private synced = 0;
  private busy = false;

  poke(fd: number, written: number): void {
    if (this.busy || written - this.synced < SYNC_EVERY) return;
    this.busy = true;
    fdatasync(fd, () => {
      this.busy = false;
      this.synced = written;
    });
  }
}

/** Resolves once `stream` can take more data, or has failed (the caller then checks the recorded error). */
function drained(stream: Writable): Promise<void> {
  if (stream.destroyed || !stream.writableNeedDrain) return Promise.resolve();
  return new Promise((resolveDrain) => {
    const done = () => {
      stream.off("drain", done);
      stream.off("close", done);
      stream.off("error", done);
      resolveDrain();
    };
    stream.on("drain", done);
    stream.on("close", done);
    stream.on("error", done);
  });
}
