// The write pass: emits the layout's metadata, then every file's bytes strictly in sector order through a
// small pool of reused buffers, so memory stays flat whatever the file sizes.

import { closeSync, openSync, readSync, WriteStream, writeSync } from "node:fs";
import { rename, unlink } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { SECTOR } from "./encode.js";
import { IsoError } from "./errors.js";
import type { Plan, PlannedFile } from "./layout.js";
import type { FileNode } from "./tree.js";

/**
 * Bytes per write to a file. Measured on a 1 GiB file: 32-64 KiB copies took 0.6-0.8 s every time, while
 * 128 KiB to 1 MiB took 0.4 s or 2 s by turns, the slow turns all spent in the kernel.
 */
const FILE_CHUNK = 64 << 10;
/** Bytes per write to a stream or memory: fewer, larger chunks where each may be a fresh allocation. */
const STREAM_CHUNK = 1 << 20;
/** File writes between turns of the event loop (8 MiB, a few milliseconds). */
const YIELD_EVERY = 128;

/** Where image bytes go. `write` resolves once the sink has taken the chunk. */
export interface Sink {
  /** The sink may keep references to chunks after `write` resolves, so they must not be reused. */
  retainsChunks: boolean;
  chunkSize: number;
  write(chunk: Buffer): Promise<void>;
  finish(): Promise<void>;
  abort(): Promise<void>;
}

/**
 * Accumulates bytes in one buffer while the previous one is being written. Methods return a promise only when
 * they had to hand a full buffer to the sink, so copying thousands of small files costs no promise per file.
 */
class Pump {
  private readonly size: number;
  private buf: Buffer;
  private spare: Buffer | null = null;
  private fill = 0;
  private inflight: Promise<void> | null = null;
  written = 0;

  constructor(private readonly sink: Sink) {
    this.size = sink.chunkSize;
    this.buf = Buffer.allocUnsafe(this.size);
  }

  /** Bytes accepted so far, written or buffered. */
  get position(): number {
    return this.written + this.fill;
  }

  /** Bytes left in the current buffer. */
  get free(): number {
    return this.size - this.fill;
  }

  /** The free tail of the current buffer, for readers that fill it in place. */
  space(): { buffer: Buffer; offset: number; length: number } {
    return { buffer: this.buf, offset: this.fill, length: this.size - this.fill };
  }

  /**
   * Reads the whole file `fd` of `size` bytes and then `pad` zeros in place, when they fit with a byte to spare
   * (the caller checks `size + pad < free`), so the buffer never fills and nothing is written here. Asks for
   * one byte more than `size`, which tells a grown file without an fstat; returns the bytes read.
   */
  readWhole(fd: number, size: number, pad: number): number {
    const n = readSync(fd, this.buf, this.fill, size + 1, 0);
    if (n === size) {
      if (pad !== 0) this.buf.fill(0, this.fill + size, this.fill + size + pad);
      this.fill += size + pad;
    }
    return n;
  }

  commit(n: number): Promise<void> | undefined {
    this.fill += n;
    return this.fill === this.size ? this.flush() : undefined;
  }

  async push(data: Buffer): Promise<void> {
    let pos = 0;
    while (pos < data.length) {
      const n = Math.min(this.size - this.fill, data.length - pos);
      data.copy(this.buf, this.fill, pos, pos + n);
      pos += n;
      await this.commit(n);
    }
  }

  zeros(count: number): Promise<void> | undefined {
    if (this.fill + count < this.size) {
      this.buf.fill(0, this.fill, this.fill + count);
      this.fill += count;
      return undefined;
    }
    return this.push(Buffer.alloc(count));
  }

  async flush(): Promise<void> {
    if (this.inflight !== null) await this.inflight;
    this.inflight = null;
    if (this.fill === 0) return;
    const full = this.buf.subarray(0, this.fill);
    if (this.sink.retainsChunks) this.buf = Buffer.allocUnsafe(this.size);
    else [this.buf, this.spare] = [this.spare ?? Buffer.allocUnsafe(this.size), this.buf];
    this.written += this.fill;
    this.fill = 0;
    this.inflight = this.sink.write(full);
  }

  async end(): Promise<void> {
    await this.flush();
    await this.flush();
  }
}

function sizeChanged(node: FileNode, actual: string): IsoError {
  return new IsoError(
    "SIZE_MISMATCH",
    `File "${node.path}" was laid out with ${node.size} bytes but ${actual}; do not modify the source while the image is written.`,
    { path: node.source.kind === "path" ? node.source.path : node.path },
  );
}

function openSource(path: string): number {
  try {
    return openSync(path, "r");
  } catch (cause) {
    throw new IsoError(
      "READ_FAILED",
      `Cannot read "${path}": ${(cause as Error).message}. Check it exists and is readable.`,
      {
        path,
        cause,
      },
    );
  }
}

/**
 * Reads the file's next bytes, from `done` on, into the pump's free space without committing them. Reads are
 * synchronous and in place: for many small files this is several times faster than thread-pool reads. Asking
 * for one byte more than expected, when the buffer has room, tells a grown file without an fstat.
 */
function readPiece(
  pump: Pump,
  fd: number,
  node: FileNode,
  path: string,
  done: number,
): { n: number; last: boolean } {
  const { buffer, offset, length } = pump.space();
  const want = node.size - done;
  const ask = Math.min(length, want + 1);
  let n: number;
  try {
    n = readSync(fd, buffer, offset, ask, done);
  } catch (cause) {
    throw new IsoError("READ_FAILED", `Reading "${path}" failed: ${(cause as Error).message}.`, {
      path,
      cause,
    });
  }
  if (n > want) throw sizeChanged(node, "it has grown");
  if (n < Math.min(ask, want)) throw sizeChanged(node, `it ended after ${done + n}`);
  return { n, last: ask > want };
}

/**
 * A file smaller than the free space of the pump's buffer takes one read and cannot fill the buffer, so it is
 * copied without a promise: for thousands of small files the promise and its await cost as much as the read.
 */
function copySmallFile(pump: Pump, node: FileNode, path: string): void {
  const fd = openSource(path);
  try {
    pump.commit(readPiece(pump, fd, node, path, 0).n);
  } finally {
    closeSync(fd);
  }
}

async function copyFromPath(pump: Pump, node: FileNode, path: string): Promise<void> {
  const fd = openSource(path);
  try {
    let done = 0;
    for (;;) {
      const { n, last } = readPiece(pump, fd, node, path, done);
      done += n;
      const flushing = pump.commit(n);
      if (flushing !== undefined) await flushing;
      if (last) return;
    }
  } finally {
    closeSync(fd);
  }
}

async function copyFromStream(pump: Pump, node: FileNode, open: () => NodeJS.ReadableStream): Promise<void> {
  let stream: NodeJS.ReadableStream;
  try {
    stream = open();
  } catch (cause) {
    throw new IsoError(
      "READ_FAILED",
      `Opening the content stream of "${node.path}" failed: ${(cause as Error).message}.`,
      {
        path: node.path,
        cause,
      },
    );
  }
  let done = 0;
  try {
    for await (const chunk of stream as AsyncIterable<Buffer | string>) {
      const data = typeof chunk === "string" ? Buffer.from(chunk, "utf8") : chunk;
      if (done + data.length > node.size) throw sizeChanged(node, "its stream gave more");
      done += data.length;
      await pump.push(data);
    }
  } catch (cause) {
    if (cause instanceof IsoError) throw cause;
    throw new IsoError(
      "READ_FAILED",
      `The content stream of "${node.path}" failed: ${(cause as Error).message}.`,
      {
        path: node.path,
        cause,
      },
    );
  } finally {
    (stream as NodeJS.ReadableStream & { destroy?: () => void }).destroy?.();
  }
  if (done !== node.size) throw sizeChanged(node, `its stream gave ${done}`);
}

/**
 * Copies files from `first` on while each is read from a path and, with its padding, fits in the pump's current
 * buffer: an open, one read into the buffer and a close each, without a promise or an object per file (20,000
 * small files are a 64 KiB buffer's worth at a time). Returns the index of the first file it left to the caller.
 */
function copySmallRun(pump: Pump, files: PlannedFile[], first: number): number {
  let i = first;
  for (; i < files.length; i++) {
    const { node, sector } = files[i]!;
    const source = node.source;
    const size = node.size;
    const pad = (SECTOR - (size % SECTOR)) % SECTOR;
    if (source.kind !== "path" || size + pad >= pump.free) break;
    if (pump.position !== sector * SECTOR) throw new Error("internal: data out of order");
    const path = source.path;
    const fd = openSource(path);
    let n: number;
    try {
      n = pump.readWhole(fd, size, pad);
    } catch (cause) {
      throw new IsoError("READ_FAILED", `Reading "${path}" failed: ${(cause as Error).message}.`, {
        path,
        cause,
      });
    } finally {
      closeSync(fd);
    }
    if (n > size) throw sizeChanged(node, "it has grown");
    if (n < size) throw sizeChanged(node, `it ended after ${n}`);
  }
  return i;
}

/** Writes the whole image described by `plan` to `sink`; returns the byte count. */
export async function writePlan(plan: Plan, sink: Sink): Promise<number> {
  const pump = new Pump(sink);
  try {
    await pump.push(plan.metadata);
    const files = plan.files;
    for (let i = copySmallRun(pump, files, 0); i < files.length; i = copySmallRun(pump, files, i + 1)) {
      const { node, sector } = files[i]!;
      if (pump.position !== sector * SECTOR) throw new Error("internal: data out of order");
      const source = node.source;
      if (source.kind === "buffer") await pump.push(source.data);
      else if (source.kind === "path") {
        if (node.size < pump.free) copySmallFile(pump, node, source.path);
        else await copyFromPath(pump, node, source.path);
      } else await copyFromStream(pump, node, source.open);
      const padding = pump.zeros((SECTOR - (node.size % SECTOR)) % SECTOR);
      if (padding !== undefined) await padding;
    }
    await pump.zeros(plan.totalSectors * SECTOR - pump.position);
    await pump.end();
  } catch (error) {
    await pump.end().catch(() => {});
    await sink.abort();
    throw error;
  }
  if (pump.written !== plan.totalSectors * SECTOR)
    throw new Error("internal: image size differs from its layout");
  await sink.finish();
  return pump.written;
}

function writeFailed(path: string, cause: unknown): IsoError {
  return new IsoError(
    "WRITE_FAILED",
    `Cannot write the image to "${path}": ${(cause as Error).message}. Check the directory exists, is writable and has space.`,
    { path, cause },
  );
}

/**
 * Creates a temporary file beside `path`. "wx" never opens an existing file or follows a link planted there, so
 * the name only has to be unlikely: Math.random rather than node:crypto, whose modules took longer to load
 * than stack-mkiso takes to write a seed image.
 */
function createTemp(path: string): { temp: string; fd: number } {
  for (let attempt = 0; ; attempt++) {
    const temp = join(dirname(path), `.${basename(path)}.${Math.random().toString(16).slice(2, 14)}.tmp`);
    try {
      return { temp, fd: openSync(temp, "wx", 0o644) };
    } catch (cause) {
      if ((cause as NodeJS.ErrnoException).code !== "EEXIST" || attempt === 9) throw writeFailed(path, cause);
    }
  }
}

/** Writes to a temporary file beside `path` and renames it into place, so no partial image is ever there. */
export async function fileSink(path: string): Promise<Sink> {
  const { temp, fd } = createTemp(path);
  let chunks = 0;
  return {
    retainsChunks: false,
    chunkSize: FILE_CHUNK,
    // Synchronous writes: with reads on the main thread and writes on the thread pool, the kernel spent two to
    // four times the system time copying a 1 GiB file. Every few chunks the event loop gets a turn.
    async write(chunk) {
      try {
        let done = 0;
        while (done < chunk.length) done += writeSync(fd, chunk, done, chunk.length - done);
      } catch (cause) {
        throw writeFailed(path, cause);
      }
      if (++chunks % YIELD_EVERY === 0) await new Promise((resolve) => setImmediate(resolve));
    },
    async finish() {
      try {
        closeSync(fd);
        await rename(temp, path);
      } catch (cause) {
        await unlink(temp).catch(() => {});
        throw writeFailed(path, cause);
      }
    },
    async abort() {
      try {
        closeSync(fd);
      } catch {
        // Already closed by a failed finish; the temporary file still goes.
      }
      await unlink(temp).catch(() => {});
    },
  };
}

/**
 * Streams whose write callback means the bytes have left the buffer (file, socket, pipe and standard output
 * streams). Any other stream may hand the very buffer on to its reader (PassThrough does), so it gets a fresh
 * buffer for every chunk.
 */
async function writesBeforeCallback(stream: NodeJS.WritableStream): Promise<boolean> {
  if (stream === process.stdout || stream === process.stderr) return true;
  const type = (stream as object).constructor;
  // Loaded only here: file outputs, the common case, do without node:net.
  return type === WriteStream || type === (await import("node:net")).Socket;
}

/** Writes to a caller's stream, honouring backpressure; the stream is left open for the caller to end. */
export async function streamSink(stream: NodeJS.WritableStream): Promise<Sink> {
  let failure: unknown = null;
  const onError = (error: unknown) => {
    failure ??= error;
  };
  stream.on("error", onError);
  const release = () => stream.removeListener("error", onError);
  const retainsChunks = !(await writesBeforeCallback(stream));
  return {
    retainsChunks,
    chunkSize: STREAM_CHUNK,
    write(chunk) {
      if (failure !== null) return Promise.reject(writeFailed("<stream>", failure));
      return new Promise((resolve, reject) => {
        stream.write(chunk, (error?: Error | null) => {
          if (error) {
            failure ??= error;
            reject(writeFailed("<stream>", error));
          } else resolve();
        });
      });
    },
    async finish() {
      release();
      if (failure !== null) throw writeFailed("<stream>", failure);
    },
    async abort() {
      release();
    },
  };
}

/** Collects the image in one buffer of the size the layout announced. */
export function bufferSink(total: number): Sink & { result: Buffer } {
  const result = Buffer.allocUnsafe(total);
  let pos = 0;
  return {
    result,
    retainsChunks: false,
    chunkSize: STREAM_CHUNK,
    async write(chunk) {
      chunk.copy(result, pos);
      pos += chunk.length;
    },
    async finish() {},
    async abort() {},
  };
}
