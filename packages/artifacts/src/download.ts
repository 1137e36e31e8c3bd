import { createHash, type Hash } from "node:crypto";
import { createReadStream, createWriteStream, fdatasync, type WriteStream } from "node:fs";
import { mkdir, rename } from "node:fs/promises";
import { basename, dirname, resolve } from "node:path";
import type { Writable } from "node:stream";
import { finished, pipeline } from "node:stream/promises";
import { DecompressStream } from "zstd-napi";
import { ArtifactsError, ioError, redactUrl } from "./errors.js";
import {
  ensureFreeSpace,
  fileSize,
  fsyncDir,
  fsyncFile,
  readJson,
  removeQuietly,
  writeFileAtomic,
} from "./fsutil.js";
import { type FollowedResponse, getFollowing, headerValue } from "./http.js";
import { type Progress, ProgressTracker } from "./progress.js";
import { failureFor, RetryableError, type RetryOptions, retrying } from "./retry.js";
import { ZSTD_HEADER_MAX, zstdContentSize } from "./zstd.js";

export interface DownloadOptions extends RetryOptions {
  url: string;
  /** Final path. `<dest>.part` (and `<dest>.part.json`) hold an unfinished download between runs. */
  dest: string;
  /** An `authorization` header here is sent only to the origin of `url`, never to a redirect target elsewhere. */
  headers?: Record<string, string>;
  /** Hex SHA-256 (or `sha256:<hex>`) of the bytes as published; a mismatch deletes the download. */
  expectedSha256?: string;
  /** Size as published, when known beforehand: lets the free-space check run before the first request. */
  expectedBytes?: number;
  /** Decompress while streaming; the digest still covers the compressed bytes as published. */
  decompress?: "zstd";
  onProgress?: (p: Progress) => void;
  /** Name shown in progress and messages. Default: the file name of `dest`. */
  label?: string;
  /** Give up on an attempt after this long without a byte. Default 30 000 ms. */
  stallTimeoutMs?: number;
}

export interface DownloadResult {
  path: string;
  /** SHA-256 of the bytes as published (before decompression). */
  sha256: string;
  /** Bytes as published. */
  bytes: number;
  /** True when the digest was compared with `expectedSha256`. */
  verified: boolean;
  /** Bytes reused from an earlier, interrupted run. */
  resumedFrom: number;
}

/**
 * With the default 16 KiB every 64 KiB network chunk waits for its own disk write; a larger buffer lets the
 * network and the disk overlap and lets the stream batch writes into one writev.
 */
const WRITE_BUFFER = 8 << 20;
const SYNC_EVERY = 64 << 20;

/**
 * Starts writeback while the download runs, so the fsync before the rename does not have to wait for a whole
 * image to reach the disk at the end. Failures are ignored here: the final fsync reports them.
 */
class EarlySync {
  private fd: number | undefined;
  private synced = 0;
  private busy = false;

  constructor(private readonly stream: WriteStream) {
    stream.once("open", (fd: number) => {
      this.fd = fd;
    });
    stream.once("close", () => {
      this.fd = undefined;
    });
  }

  poke(): void {
    const written = this.stream.bytesWritten;
    if (this.busy || this.fd === undefined || written - this.synced < SYNC_EVERY) return;
    this.busy = true;
    fdatasync(this.fd, () => {
      this.busy = false;
      this.synced = written;
    });
  }
}

interface PartMeta {
  url: string;
  /** Strong ETag or Last-Modified of the object, sent back in If-Range. */
  validator?: string;
  sha256?: string;
}

export function normalizeSha256(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  const hex = value.toLowerCase().replace(/^sha256:/, "");
  if (!/^[0-9a-f]{64}$/.test(hex)) {
    throw new ArtifactsError("INVALID_ARGUMENT", `Not a SHA-256 digest: ${JSON.stringify(value)}.`);
  }
  return hex;
}

/** What the attempts of one download share, and what they have learned so far. */
interface Transfer {
  opts: DownloadOptions;
  label: string;
  dir: string;
  metaPath: string;
  /** The decompressed output, when decompressing. */
  outPath: string | undefined;
  expected: string | undefined;
  headers: Record<string, string>;
  /** An `authorization` header, kept apart: it goes to the first URL's origin only. */
  credentials: Record<string, string>;
  sink: Sink;
  progress: ProgressTracker;
  meta: PartMeta;
  metaSaved: boolean;
  spaceChecked: boolean;
  unpackedSpaceChecked: boolean;
}

/**
 * Downloads `url` to `dest`: resumable through a `.part` file, hashed while streaming, verified, fsynced and
 * renamed into place. Never leaves a partial file under the final name.
 */
export async function download(opts: DownloadOptions): Promise<DownloadResult> {
  const dest = resolve(opts.dest);
  const dir = dirname(dest);
  const label = opts.label ?? basename(dest);
  const expected = normalizeSha256(opts.expectedSha256);
  const partPath = `${dest}.part`;
  const metaPath = `${dest}.part.json`;
  const outPath = opts.decompress ? `${dest}.unpacking` : undefined;
  const { headers, credentials } = splitHeaders(opts.headers);

  try {
    await mkdir(dir, { recursive: true });
  } catch (err) {
    throw ioError(err, `creating ${dir}`);
  }
  const { meta, reusable, resumedFrom } = await earlierPart(opts.url, expected, partPath, metaPath);

  const sink = new Sink(partPath, outPath);
  const progress = new ProgressTracker(label, opts.onProgress);
  let succeeded = false;
  try {
    await sink.open(resumedFrom);
    if (resumedFrom > 0) opts.onMessage?.(`${label}: resuming at byte ${resumedFrom}`);
    if (opts.expectedBytes !== undefined) await ensureFreeSpace(dir, opts.expectedBytes - resumedFrom);
    const transfer: Transfer = {
      opts,
      label,
      dir,
      metaPath,
      outPath,
      expected,
      headers,
      credentials,
      sink,
      progress,
      meta,
      metaSaved: reusable,
      spaceChecked: opts.expectedBytes !== undefined,
      unpackedSpaceChecked: false,
    };
    await retrying(`Downloading ${label}`, opts, () => attempt(transfer));

    await sink.finish();
    const sha256 = sink.digest();
    if (expected && sha256 !== expected) {
      await removeQuietly(partPath, metaPath, outPath);
      if (resumedFrom > 0) {
        // The bytes kept from an earlier run may belong to another version of the file: one clean try.
        opts.onMessage?.(
          `${label}: SHA-256 mismatch after resuming an earlier download; deleted it, starting over`,
        );
        await sink.close();
        succeeded = true;
        return download(opts);
      }
      throw new ArtifactsError(
        "CHECKSUM_MISMATCH",
        `${label}: SHA-256 mismatch (expected ${expected}, got ${sha256}); the download was deleted. Run the command again to download it afresh; if it fails again, the published file does not match its published digest.`,
        { url: redactUrl(opts.url) },
      );
    }
    if (sink.decompressError) {
      await removeQuietly(partPath, metaPath, outPath);
      throw new ArtifactsError(
        "DECOMPRESS_FAILED",
        `${label}: not valid zstd data (${sink.decompressError.message}); the download was deleted.`,
        { cause: sink.decompressError },
      );
    }
    await moveIntoPlace(outPath ?? partPath, dest, dir);
    await removeQuietly(metaPath, outPath ? partPath : undefined);
    progress.finish();
    succeeded = true;
    return { path: dest, sha256, bytes: sink.bytes, verified: expected !== undefined, resumedFrom };
  } finally {
    if (!succeeded) {
      await sink.close();
      // The .part stays for the next run to resume; the decompressed output is rebuilt from it anyway.
      await removeQuietly(outPath);
    }
  }
}

/** Lower-cased headers with a user agent, and the `authorization` header apart from them. */
function splitHeaders(given: Record<string, string> | undefined): {
  headers: Record<string, string>;
  credentials: Record<string, string>;
} {
  const headers: Record<string, string> = { "user-agent": "stack-artifacts" };
  const credentials: Record<string, string> = {};
  for (const [k, v] of Object.entries(given ?? {})) {
    if (k.toLowerCase() === "authorization") credentials.authorization = v;
    else headers[k.toLowerCase()] = v;
  }
  return { headers, credentials };
}

/**
 * Whether an earlier run's `.part` can be continued: same URL and digest, and a validator or a digest to detect
 * a changed file. Returns the sidecar to keep using and the bytes to resume from.
 */
async function earlierPart(
  url: string,
  expected: string | undefined,
  partPath: string,
  metaPath: string,
): Promise<{ meta: PartMeta; reusable: boolean; resumedFrom: number }> {
  const fresh: PartMeta = { url, ...(expected ? { sha256: expected } : {}) };
  const previous = await readJson<PartMeta>(metaPath);
  const existing = (await fileSize(partPath)) ?? 0;
  const reusable =
    existing > 0 &&
    previous?.url === url &&
    previous.sha256 === fresh.sha256 &&
    (previous.validator !== undefined || expected !== undefined);
  return reusable
    ? { meta: previous, reusable, resumedFrom: existing }
    : { meta: fresh, reusable, resumedFrom: 0 };
}

/** One try: a request resuming where the sink stands, its answer checked, its body received. */
async function attempt(t: Transfer): Promise<void> {
  const res = await request(t);
  let consumed = false;
  try {
    const answer = await acceptStatus(res, t);
    if (answer.complete) return;
    await rememberVersion(res, t);
    if (!t.spaceChecked && answer.total !== undefined) {
      await ensureFreeSpace(t.dir, answer.total - t.sink.bytes);
      t.spaceChecked = true;
    }
    t.progress.setTotal(answer.total);
    consumed = true;
    await receiveBody(res, answer.total, t);
  } finally {
    // Closing beats draining here: an unwanted body may be the whole multi-gigabyte file.
    if (!consumed) res.body.destroy();
  }
}

/** Sends the GET, with a range (and If-Range) when the sink already holds bytes that can be resumed. */
async function request(t: Transfer): Promise<FollowedResponse> {
  // Without a validator or a digest, resuming could splice two versions of the file together undetected.
  const canResume = t.meta.validator !== undefined || t.expected !== undefined;
  if (t.sink.bytes > 0 && !canResume) await t.sink.reset();
  const attemptHeaders = { ...t.headers };
  if (t.sink.bytes > 0) {
    attemptHeaders.range = `bytes=${t.sink.bytes}-`;
    if (t.meta.validator) attemptHeaders["if-range"] = t.meta.validator;
  }
  return getFollowing(t.opts.url, {
    headers: attemptHeaders,
    credentials: t.credentials,
    signal: t.opts.signal,
    stallTimeoutMs: t.opts.stallTimeoutMs ?? 30_000,
    bulk: true,
  });
}

/**
 * What the status says about the body to come: its total size (when known), or that the `.part` was already
 * complete (416 at its exact size). A resume the server did not honour resets the sink; failures throw, retryable
 * or not.
 */
async function acceptStatus(
  res: FollowedResponse,
  t: Transfer,
): Promise<{ complete: boolean; total: number | undefined }> {
  const { sink, opts, label } = t;
  if (res.statusCode === 206) {
    const range = parseContentRange(headerValue(res.headers, "content-range"));
    if (range?.start !== sink.bytes) {
      await sink.reset();
      throw new RetryableError("the server resumed at the wrong position; restarting from zero", 0);
    }
    return { complete: false, total: range.total };
  }
  if (res.statusCode === 200) {
    if (sink.bytes > 0) {
      opts.onMessage?.(`${label}: the server did not resume (answered 200); restarting from zero`);
      await sink.reset();
    }
    const length = Number(headerValue(res.headers, "content-length"));
    return { complete: false, total: Number.isFinite(length) ? length : undefined };
  }
  if (res.statusCode === 416) {
    const range = parseContentRange(headerValue(res.headers, "content-range"));
    if (range?.total !== undefined && range.total === sink.bytes)
      return { complete: true, total: range.total }; // the .part was already complete
    opts.onMessage?.(`${label}: the server rejected the resume position (416); restarting from zero`);
    await sink.reset();
    throw new RetryableError("range not satisfiable", 0);
  }
  throw failureFor(
    res.statusCode,
    res.headers,
    {
      what: label,
      url: res.url,
      hasToken: "authorization" in t.credentials,
      crossOrigin: res.crossOrigin,
    },
    opts,
  );
}

/** The sidecar lets a later run resume: it records which URL, digest and object version the .part holds. */
async function rememberVersion(res: FollowedResponse, t: Transfer): Promise<void> {
  const validator = strongValidator(res.headers);
  if (!t.metaSaved || validator !== t.meta.validator) {
    const { validator: _old, ...rest } = t.meta;
    t.meta = validator ? { ...rest, validator } : rest;
    await writeFileAtomic(t.metaPath, JSON.stringify(t.meta));
    t.metaSaved = true;
  }
}

/** Streams the body into the sink; a body that ends short of `total` is a retryable cut. */
async function receiveBody(res: FollowedResponse, total: number | undefined, t: Transfer): Promise<void> {
  const { sink } = t;
  for await (const chunk of res.body) {
    await sink.write(chunk as Buffer);
    t.progress.set(sink.bytes);
    if (t.outPath && !t.unpackedSpaceChecked && sink.head.length >= ZSTD_HEADER_MAX) {
      // The decompressed size is known only once the frame header has arrived.
      t.unpackedSpaceChecked = true;
      const unpacked = zstdContentSize(sink.head);
      const stillCompressed = total === undefined ? 0 : total - sink.bytes;
      if (unpacked !== undefined)
        await ensureFreeSpace(t.dir, unpacked - sink.unpackedBytes + stillCompressed);
    }
  }
  if (total !== undefined && sink.bytes !== total) {
    throw new RetryableError(`the connection closed at byte ${sink.bytes} of ${total}`);
  }
}

/** fsync, rename over `dest`, fsync the directory. */
async function moveIntoPlace(finalTmp: string, dest: string, dir: string): Promise<void> {
  try {
    await fsyncFile(finalTmp);
    await rename(finalTmp, dest);
    await fsyncDir(dir);
  } catch (err) {
    throw ioError(err, `moving the download to ${dest}`);
  }
}

function parseContentRange(value: string | undefined): { start?: number; total?: number } | undefined {
  if (!value) return undefined;
  const m = /^bytes\s+(?:(\d+)-\d+|\*)\/(\d+|\*)$/.exec(value.trim());
  if (!m) return undefined;
  const r: { start?: number; total?: number } = {};
  if (m[1] !== undefined) r.start = Number(m[1]);
  if (m[2] !== "*") r.total = Number(m[2]);
  return r;
}

/** If-Range needs a strong validator: a weak ETag would never match and always restart from zero. */
function strongValidator(headers: Record<string, string | string[] | undefined>): string | undefined {
  const etag = headerValue(headers, "etag");
  if (etag && !etag.startsWith("W/")) return etag;
  return headerValue(headers, "last-modified");
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

/**
 * Where downloaded bytes go: the SHA-256, the `.part` file and, for compressed assets, a streaming decompressor.
 * The hash cannot be persisted, so reopening an existing `.part` replays it through the hash and the decompressor.
 */
class Sink {
  bytes = 0;
  /** The first bytes as published, for the zstd frame header. */
  head: Buffer = Buffer.alloc(0);
  decompressError: Error | undefined;
  private hash: Hash = createHash("sha256");
  private part: WriteStream | undefined;
  private zstd: { dec: DecompressStream; out: WriteStream; done: Promise<void>; sync: EarlySync } | undefined;
  private partSync: EarlySync | undefined;
  private failure: ArtifactsError | undefined;

  constructor(
    private readonly partPath: string,
    private readonly outPath: string | undefined,
  ) {}

  async open(offset: number): Promise<void> {
    this.hash = createHash("sha256");
    this.bytes = 0;
    this.head = Buffer.alloc(0);
    this.failure = undefined;
    this.decompressError = undefined;
    if (this.outPath) this.startDecompressor(this.outPath);
    if (offset > 0) {
      try {
        for await (const chunk of createReadStream(this.partPath, { end: offset - 1 }))
          await this.feed(chunk, false);
      } catch (err) {
        throw ioError(err, `reading ${this.partPath}`);
      }
    }
    const part = createWriteStream(this.partPath, {
      flags: offset > 0 ? "a" : "w",
      highWaterMark: WRITE_BUFFER,
    });
    part.on("error", (err) => {
      this.failure ??= ioError(err, `writing ${this.partPath}`);
    });
    this.part = part;
    this.partSync = new EarlySync(part);
  }

  async reset(): Promise<void> {
    await this.close();
    await this.open(0);
  }

  write(chunk: Buffer): Promise<void> {
    return this.feed(chunk, true);
  }

  /** Decompressed bytes handed to the file system so far. */
  get unpackedBytes(): number {
    return this.zstd?.out.bytesWritten ?? 0;
  }

  private async feed(chunk: Buffer, toPart: boolean): Promise<void> {
    if (this.head.length < ZSTD_HEADER_MAX) {
      this.head = Buffer.concat([this.head, chunk.subarray(0, ZSTD_HEADER_MAX - this.head.length)]);
    }
    this.hash.update(chunk);
    this.bytes += chunk.length;
    const partFull = toPart && !this.part!.write(chunk);
    if (toPart && !this.zstd) this.partSync!.poke();
    this.zstd?.sync.poke();
    const dec = this.decompressError ? undefined : this.zstd?.dec;
    const decFull = dec !== undefined && !dec.write(chunk);
    if (partFull) await drained(this.part!);
    if (decFull) await drained(dec);
    if (this.failure) throw this.failure;
  }

  async finish(): Promise<void> {
    const part = this.part!;
    part.end();
    await finished(part).catch(() => {});
    if (this.zstd && !this.decompressError) {
      this.zstd.dec.end();
      await this.zstd.done;
    }
    if (this.failure) throw this.failure;
  }

  digest(): string {
    return this.hash.digest("hex");
  }

  /** Waits for the file descriptors to close: a late write from an old stream would corrupt a restarted file. */
  async close(): Promise<void> {
    const streams = [this.part, this.zstd?.dec, this.zstd?.out].filter((s) => s !== undefined);
    this.part = undefined;
    this.zstd = undefined;
    await Promise.all(
      streams.map((s) => {
        if (s.closed) return undefined;
        const closed = new Promise<void>((ok) => s.once("close", () => ok()));
        s.destroy();
        return closed;
      }),
    );
  }

  private startDecompressor(outPath: string): void {
    const dec = new DecompressStream();
    const out = createWriteStream(outPath, { highWaterMark: WRITE_BUFFER });
    // A corrupt stream is reported only after the digest check: a digest mismatch is the more useful diagnosis.
    dec.on("error", (err) => {
      this.decompressError ??= err;
    });
    out.on("error", (err) => {
      // pipeline() also destroys `out` with the decompressor's own error; that one is not an I/O failure.
      if (err !== this.decompressError) this.failure ??= ioError(err, `writing ${outPath}`);
    });
    const done = pipeline(dec, out).catch(() => {});
    this.zstd = { dec, out, done, sync: new EarlySync(out) };
  }
}
