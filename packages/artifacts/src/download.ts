import { mkdir, rename } from "node:fs/promises";
import { basename, dirname, resolve } from "node:path";
import { Assembler } from "./assembler.js";
import { ArtifactsError, ioError, redactUrl } from "./errors.js";
import { ensureFreeSpace, fileSize, fsyncDir, fsyncFile, removeQuietly } from "./fsutil.js";
import { type FollowedResponse, get, getFollowing, headerValue } from "./http.js";
import { Http1Agent } from "./http1.js";
import { type Claim, Plan } from "./plan.js";
import { formatBytes, type Progress, ProgressTracker } from "./progress.js";
import { proxyFor } from "./proxy.js";
import { Ranges } from "./ranges.js";
import {
  abortedError,
  afterFailure,
  failureFor,
  LINK_REFUSED,
  RetryableError,
  type RetryOptions,
} from "./retry.js";
import { release, retain } from "./slabs.js";
import { earlierState, type PartState, StateWriter } from "./state.js";
import { loadZstd, type Zstd } from "./zstd.js";

export interface DownloadOptions extends RetryOptions {
  url: string;
  /** Final path. `<dest>.part` and its state `<dest>.part.json` hold an unfinished download between runs. */
  dest: string;
  /** An `authorization` header here is sent only to the origin of `url`, never to a redirect target elsewhere. */
  headers?: Record<string, string>;
  /** Hex SHA-256 (or `sha256:<hex>`) of the bytes as published; a mismatch deletes the download. */
  expectedSha256?: string;
  /** Size as published, when known beforehand: lets the free-space check run before the first request. */
  expectedBytes?: number;
  /**
   * What the download is unpacked into beside it counts in the free-space check before the first request: the
   * decompressed file with `decompress`, an archive's files with `unpackedBeside`. This is their size when known
   * beforehand; without it they are assumed to be at least as large as the download (zstd and deflate add only a
   * few bytes of framing to data they cannot shrink), and with `decompress` the size in the zstd frame header is
   * checked again as soon as it arrives.
   */
  unpackedBytes?: number;
  /** The caller extracts the download (an archive) next to it afterwards: see `unpackedBytes`. */
  unpackedBeside?: boolean;
  /**
   * What `url` stands for, such as a release asset's id and `updated_at`: an unfinished download of something else
   * (an asset replaced under the same name) is not resumed.
   */
  identity?: string;
  /** Decompress while streaming; the digest still covers the compressed bytes as published. */
  decompress?: "zstd";
  onProgress?: (p: Progress) => void;
  /** Name shown in progress and messages. Default: the file name of `dest`. */
  label?: string;
  /** Give up on an attempt after this long without a byte. Default 30 000 ms. */
  stallTimeoutMs?: number;
  /** At most this many connections at once. Default 8; 1 downloads in a single stream. */
  connections?: number;
  /** Add connections only while they add throughput (default); false opens `connections` at once. */
  adaptive?: boolean;
  /** Environment for HTTPS_PROXY, HTTP_PROXY and NO_PROXY. Default process.env. */
  env?: NodeJS.ProcessEnv;
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
  /** Bytes this call fetched over the network. */
  fetchedBytes: number;
  /** How long this call took. */
  seconds: number;
  /** The most connections this call had open at once. */
  connections: number;
}

/** Memory for pieces beyond the contiguous prefix, waiting for the hash: what the window costs at most. */
const WINDOW_BYTES = 64 << 20;
/** How often the throughput is looked at while connections are being added. */
const RAMP_TICK_MS = 25;
/** The shortest stretch a throughput is measured over: long enough for the bytes of several reads. */
const RAMP_MEASURE_MS = 100;
/** New connections that each added at least this share of what an earlier one brings earn more of them. */
const RAMP_GAIN = 0.5;
/**
 * Busier than this, the client itself is what limits the download (hashing and writing a fast local stream):
 * more connections would only share the same CPU.
 */
const RAMP_MAX_BUSY = 0.8;
/** Bounds of what a split of a claim must be worth, whatever the measurements say. */
const MIN_SPLIT = 128 << 10;
const MAX_SPLIT = 4 << 20;

export function normalizeSha256(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  const hex = value.toLowerCase().replace(/^sha256:/, "");
  if (!/^[0-9a-f]{64}$/.test(hex)) {
    throw new ArtifactsError("INVALID_ARGUMENT", `Not a SHA-256 digest: ${JSON.stringify(value)}.`);
  }
  return hex;
}

/** Paths and settings of one download, shared by its passes. */
interface Job {
  opts: DownloadOptions;
  label: string;
  dest: string;
  dir: string;
  partPath: string;
  metaPath: string;
  /** The decompressed output and the decompressor, when decompressing. */
  unpack: { path: string; zstd: Zstd } | undefined;
  expected: string | undefined;
  headers: Record<string, string>;
  /** An `authorization` header, kept apart: it goes to the first URL's origin only. */
  credentials: Record<string, string>;
  agent: Http1Agent;
  connections: number;
  /** Bytes fetched over the network by the passes so far (a pass that starts over fetched some too). */
  fetched: number;
}

/**
 * Downloads `url` to `dest` over several connections at once: resumable across runs through `<dest>.part` and its
 * state file, hashed while streaming, verified, fsynced and renamed into place. Never leaves a partial file, or
 * one that failed its digest check, under the final name (without `expectedSha256` nothing is verified).
 */
export async function download(opts: DownloadOptions): Promise<DownloadResult> {
  const started = performance.now();
  const dest = resolve(opts.dest);
  const env = opts.env ?? process.env;
  const { headers, credentials } = splitHeaders(opts.headers);
  // Before any byte is fetched: a download that could not be decompressed would be wasted.
  const zstd = opts.decompress ? await loadZstd() : undefined;
  const job: Job = {
    opts,
    label: opts.label ?? basename(dest),
    dest,
    dir: dirname(dest),
    partPath: `${dest}.part`,
    metaPath: `${dest}.part.json`,
    unpack: zstd ? { path: `${dest}.unpacking`, zstd } : undefined,
    expected: normalizeSha256(opts.expectedSha256),
    headers,
    credentials,
    agent: new Http1Agent({ proxyFor: (url) => proxyFor(url, env) }),
    connections: Math.max(1, Math.floor(opts.connections ?? 8)),
    fetched: 0,
  };
  try {
    await mkdir(job.dir, { recursive: true });
  } catch (err) {
    throw ioError(err, `creating ${job.dir}`);
  }
  try {
    const first = await pass(job, true);
    const result =
      first === "start over"
        ? await pass(job, false).then((second) => {
            if (second === "start over") throw new Error("a fresh download cannot have resumed");
            return second;
          })
        : first;
    return { ...result, seconds: (performance.now() - started) / 1000 };
  } catch (err) {
    // The .part stays for the next run to resume; the decompressed output is rebuilt from zero anyway.
    await removeQuietly(job.unpack?.path);
    throw err;
  } finally {
    job.agent.close();
  }
}

/**
 * One go at the whole file: continues an earlier run's .part when `resume` allows and there is one. A digest
 * mismatch after resuming asks for a fresh start, since the kept bytes may come from another version of the file.
 */
async function pass(job: Job, resume: boolean): Promise<Omit<DownloadResult, "seconds"> | "start over"> {
  const { opts, label, partPath, metaPath, expected } = job;
  const unpackPath = job.unpack?.path;
  const earlier = resume
    ? await earlierState(metaPath, await fileSize(partPath), {
        url: opts.url,
        ...(opts.identity !== undefined ? { identity: opts.identity } : {}),
        ...(expected ? { sha256: expected } : {}),
      })
    : undefined;
  if (!earlier) await removeQuietly(partPath, metaPath, `${metaPath}.tmp`, unpackPath);
  const here = earlier?.onDisk.size ?? 0;
  if (here > 0) {
    opts.onMessage?.(`${label}: resuming, ${formatBytes(here)} already here from an earlier run`);
  }
  await checkSpaceBeforehand(job, here);

  const session = new Session(job, earlier);
  try {
    await session.run();
  } finally {
    job.fetched += session.fetched;
  }
  const sink = session.sink;
  const sha256 = sink.digest();
  // What the session kept of the earlier run: nothing when it had to start over (the file changed, 200, 416).
  const resumedFrom = session.kept;
  if (expected && sha256 !== expected) {
    await removeQuietly(partPath, metaPath, unpackPath);
    if (resumedFrom > 0) {
      opts.onMessage?.(
        `${label}: SHA-256 mismatch after resuming an earlier download; deleted it, starting over`,
      );
      return "start over";
    }
    throw new ArtifactsError(
      "CHECKSUM_MISMATCH",
      `${label}: SHA-256 mismatch (expected ${expected}, got ${sha256}); the download was deleted. Run the command again to download it afresh; if it fails again, the published file does not match its published digest.`,
      { url: redactUrl(opts.url) },
    );
  }
  if (sink.decompressError) {
    await removeQuietly(partPath, metaPath, unpackPath);
    throw new ArtifactsError(
      "DECOMPRESS_FAILED",
      `${label}: not valid zstd data (${sink.decompressError.message}); the download was deleted.`,
      { cause: sink.decompressError },
    );
  }
  await moveIntoPlace(unpackPath ?? partPath, job.dest, job.dir);
  await removeQuietly(metaPath, unpackPath ? partPath : undefined);
  session.progress.finish();
  return {
    path: job.dest,
    sha256,
    bytes: sink.total ?? 0,
    verified: expected !== undefined,
    resumedFrom,
    fetchedBytes: job.fetched,
    connections: session.peak,
  };
}

/**
 * Fails before the first request when the download and what it unpacks into cannot fit: the bytes still to
 * download, and the unpacked output (rewritten in full, so an earlier run's output frees its space).
 */
async function checkSpaceBeforehand(job: Job, resumedFrom: number): Promise<void> {
  const { expectedBytes, unpackedBytes } = job.opts;
  if (expectedBytes === undefined) return;
  const download = expectedBytes - resumedFrom;
  if (!job.opts.decompress && !job.opts.unpackedBeside) return ensureFreeSpace(job.dir, download);
  const earlierOutput = job.unpack ? ((await fileSize(job.unpack.path)) ?? 0) : 0;
  const unpacked = Math.max(0, (unpackedBytes ?? expectedBytes) - earlierOutput);
  const assumed = unpackedBytes === undefined ? ", assumed at least the download's size" : "";
  await ensureFreeSpace(
    job.dir,
    download + unpacked,
    `${formatBytes(download)} to download + ${formatBytes(unpacked)} unpacked${assumed}`,
  );
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

/** Thrown by a connection that found the download must start from zero: the file changed, or Range is ignored. */
class Restart extends Error {
  constructor(
    message: string,
    /** The server ignores Range: from now on, one stream without it. */
    readonly single: boolean,
  ) {
    super(message);
  }
}

/** The link a request may be sent to: the URL asked for, or the storage URL it redirected to, while that works. */
class Link {
  private resolved: { url: string; sameOrigin: boolean } | undefined;
  private resolving: Promise<unknown> | undefined;

  constructor(private readonly job: Job) {}

  /**
   * GETs the resolved link, or resolves it through the URL asked for (one connection at a time does that; the
   * others wait for its answer). `fresh` says the answer came through the URL asked for.
   */
  async get(
    headers: Record<string, string>,
    signal: AbortSignal,
  ): Promise<FollowedResponse & { fresh: boolean }> {
    const { job } = this;
    const common = {
      agent: job.agent,
      signal,
      stallTimeoutMs: job.opts.stallTimeoutMs ?? 30_000,
    };
    for (;;) {
      const link = this.resolved;
      if (link) {
        const res = await get(
          link.url,
          link.sameOrigin ? { ...headers, ...job.credentials } : headers,
          common,
        );
        return { ...res, url: link.url, crossOrigin: !link.sameOrigin, fresh: false };
      }
      if (this.resolving) {
        await this.resolving.catch(() => {});
        continue;
      }
      const answer = getFollowing(job.opts.url, { ...common, headers, credentials: job.credentials });
      this.resolving = answer;
      try {
        const res = await answer;
        if (res.statusCode >= 200 && res.statusCode < 300) {
          this.resolved = { url: res.url, sameOrigin: !res.crossOrigin };
        }
        return { ...res, fresh: true };
      } finally {
        this.resolving = undefined;
      }
    }
  }

  /** The link stopped working (a signed URL expired): the next request resolves it again. */
  expire(url: string): void {
    if (this.resolved?.url === url) this.resolved = undefined;
  }
}

/**
 * The connections of one download and what they share: the plan of who fetches what, the assembler, the state
 * file and the link. Connections are added while they add throughput (see `adapt()`).
 */
class Session {
  sink!: Assembler;
  readonly progress: ProgressTracker;
  /** Bytes fetched over the network. */
  fetched = 0;
  /** The most connections at work at once. */
  peak = 0;
  private plan!: Plan;
  private writer!: StateWriter;
  private readonly link: Link;
  private state: PartState;
  private onDisk: Ranges;
  /** The server ignores Range: one stream, from zero. */
  private single = false;
  private restarts = 0;
  private target = 1;
  private active = 0;
  private workers: Promise<void>[] = [];
  private wakers: (() => void)[] = [];
  private over = false;
  private stop!: AbortController;
  private fail!: (err: unknown) => void;
  /** How long requests wait for their answer, averaged. */
  private firstAnswerMs = 0;
  /** `fetched` over the last half second, for the throughput. */
  private recent: { t: number; bytes: number }[] = [];
  private ramp = newRamp();

  constructor(
    private readonly job: Job,
    earlier: { state: PartState; onDisk: Ranges } | undefined,
  ) {
    this.link = new Link(job);
    this.state = earlier?.state ?? this.freshState();
    this.onDisk = earlier?.onDisk ?? new Ranges();
    this.progress = new ProgressTracker(job.label, job.opts.onProgress);
  }

  /** Bytes of an earlier run's .part that this session kept: none once it restarted from zero. */
  get kept(): number {
    return this.onDisk.size;
  }

  /** Runs until the assembler has every byte in order; starts over when a connection says it must. */
  async run(): Promise<void> {
    for (;;) {
      try {
        await this.pass();
        return;
      } catch (err) {
        if (!(err instanceof Restart)) throw err;
        this.job.opts.onMessage?.(`${this.job.label}: ${err.message}; restarting from zero`);
        if (++this.restarts > (this.job.opts.retries ?? 5)) {
          throw new ArtifactsError(
            "NETWORK",
            `Downloading ${this.job.label} had to restart from zero ${this.restarts} times (${err.message}). Run the command again later.`,
          );
        }
        await removeQuietly(this.job.partPath, this.job.metaPath, this.job.unpack?.path);
        this.single ||= err.single;
        this.state = this.freshState();
        this.onDisk = new Ranges();
      }
    }
  }

  private freshState(): PartState {
    const { opts, expected } = this.job;
    return {
      version: 2,
      url: opts.url,
      ...(opts.identity !== undefined ? { identity: opts.identity } : {}),
      ...(expected ? { sha256: expected } : {}),
      done: [],
    };
  }

  private async pass(): Promise<void> {
    const { job } = this;
    this.over = false;
    this.stop = new AbortController();
    const failed = new Promise<never>((_, reject) => {
      this.fail = (err) => {
        this.over = true;
        reject(err);
      };
    });
    failed.catch(() => {});
    const user = job.opts.signal;
    const onAbort = () => this.fail(abortedError(user));
    if (user?.aborted) onAbort();
    user?.addEventListener("abort", onAbort, { once: true });
    this.sink = new Assembler({
      partPath: job.partPath,
      ...(job.unpack ? { unpack: job.unpack } : {}),
      onDisk: this.onDisk,
      onWritten: () => this.writer.touch(),
      onAdvance: () => this.wakeAll(),
    });
    this.writer = new StateWriter(
      job.metaPath,
      () => this.snapshot(),
      (err) => this.fail(err),
    );
    const missing = new Ranges([[0, this.state.total ?? Number.POSITIVE_INFINITY]]);
    for (const [s, e] of this.onDisk.intervals) missing.remove(s, e);
    this.plan = new Plan(missing, pieceBytes(job.connections), WINDOW_BYTES, () => this.sink.frontier);
    this.target = 1;
    this.ramp = { ...newRamp(), on: !this.single && job.connections > 1 };
    this.progress.setTotal(this.state.total);
    const tick = setInterval(() => {
      const now = performance.now();
      this.recent.push({ t: now, bytes: this.fetched });
      while (now - this.recent[0]!.t > 500) this.recent.shift();
      this.adapt();
    }, RAMP_TICK_MS);
    let succeeded = false;
    try {
      await this.sink.open(this.state.total);
      this.spawn();
      await Promise.race([this.sink.consumed, failed]);
      succeeded = true;
    } finally {
      user?.removeEventListener("abort", onAbort);
      clearInterval(tick);
      this.over = true;
      this.stop.abort();
      this.wakeAll();
      await Promise.allSettled(this.workers);
      this.workers = [];
      try {
        if (succeeded) await this.sink.finish();
        else await this.sink.close();
      } finally {
        await this.writer.stop();
      }
    }
  }

  private snapshot(): PartState {
    return { ...this.state, done: this.sink.written.intervals.map(([s, e]) => [s, e]) };
  }

  /**
   * What a split must hand over at least: what one connection fetches in two waits for a first answer, so that
   * the new request's round trip is paid back (small on a fast, near server; large on a far one).
   */
  private splitWorth(): number {
    const perConnection = this.recentRate() / Math.max(1, this.active);
    return Math.min(MAX_SPLIT, Math.max(MIN_SPLIT, 2 * (this.firstAnswerMs / 1000) * perConnection));
  }

  /** Bytes per second over the last half second. */
  private recentRate(): number {
    const first = this.recent[0];
    const last = this.recent.at(-1);
    return first && last && last.t > first.t ? ((last.bytes - first.bytes) / (last.t - first.t)) * 1000 : 0;
  }

  /** Fires when the caller gives up or the pass ends. */
  private signal(): AbortSignal {
    const user = this.job.opts.signal;
    return user ? AbortSignal.any([user, this.stop.signal]) : this.stop.signal;
  }

  private spawn(): void {
    const id = this.workers.length;
    this.ramp.spawned = performance.now();
    this.workers.push(this.work(id));
  }

  private wakeAll(): void {
    for (const wake of this.wakers.splice(0)) wake();
  }

  private changed(): Promise<void> {
    return new Promise((wake) => this.wakers.push(wake));
  }

  /** One connection: claims range after range until the file is complete or it is no longer wanted. */
  private async work(id: number): Promise<void> {
    let failures = 0;
    const signal = this.signal();
    while (!this.over && id < this.target) {
      const claim = this.plan.take(this.single || this.target === 1) ?? this.plan.steal(this.splitWorth());
      if (!claim) {
        await this.changed();
        continue;
      }
      const before = claim.pos;
      this.active++;
      this.peak = Math.max(this.peak, this.active);
      this.progress.setConnections(this.active);
      try {
        await this.fetch(claim, id, signal);
        this.plan.finish(claim);
        failures = 0;
      } catch (err) {
        this.plan.release(claim);
        if (this.over) return;
        if (this.job.opts.signal?.aborted) {
          this.fail(abortedError(this.job.opts.signal));
          return;
        }
        if (err instanceof Restart || err instanceof ArtifactsError) {
          this.fail(err);
          return;
        }
        if (err instanceof LinkExpired) continue;
        failures = claim.pos > before ? 1 : failures + 1;
        try {
          await afterFailure(`Downloading ${this.job.label}`, err, failures, { ...this.job.opts, signal });
        } catch (final) {
          if (!this.over)
            this.fail(this.job.opts.signal?.aborted ? abortedError(this.job.opts.signal) : final);
          return;
        }
      } finally {
        this.active--;
        this.progress.setConnections(this.active);
        this.wakeAll();
      }
    }
  }

  /** Requests a claim's bytes and takes them, extending the claim while the answer runs on. */
  private async fetch(claim: Claim, id: number, signal: AbortSignal): Promise<void> {
    const headers = { ...this.job.headers };
    if (!this.single) {
      const total = this.state.total ?? Number.POSITIVE_INFINITY;
      headers.range =
        claim.reqEnd >= total ? `bytes=${claim.pos}-` : `bytes=${claim.pos}-${claim.reqEnd - 1}`;
      if (this.state.validator) headers["if-range"] = this.state.validator;
      else if (claim.pos > 0 && !this.job.expected) {
        // Nothing would tell this version's bytes from a replacement of the same size: only a fresh start is safe.
        throw new Restart("the server gave no ETag or Last-Modified to resume against", false);
      }
    }
    const asked = performance.now();
    const res = await this.link.get(headers, signal);
    const waited = performance.now() - asked;
    this.firstAnswerMs = this.firstAnswerMs === 0 ? waited : 0.8 * this.firstAnswerMs + 0.2 * waited;
    let end: number;
    try {
      end = await this.accept(res, claim);
    } catch (err) {
      // Closing beats draining here: an unwanted body may be the whole multi-gigabyte file.
      res.body.destroy();
      throw err;
    }
    // The newest connection's first answer: all of the latest ones are running (give or take a round trip).
    if (id === this.workers.length - 1 && !this.ramp.ready) this.rampFrom(performance.now());
    let pos = claim.pos;
    receiving: for await (const chunk of res.body) {
      try {
        for (let at = 0; at < chunk.length; ) {
          // At the claim's end the claim grows, or the rest of the answer belongs to another connection.
          if (pos >= claim.end && !(await this.extend(claim, end))) break receiving;
          const piece = chunk.subarray(at, at + Math.min(chunk.length - at, claim.end - pos));
          // Moved before waiting for the disk, so that a split never hands out bytes that are already here.
          claim.pos = pos + piece.length;
          this.fetched += piece.length;
          retain(piece);
          const put = this.sink.put(pos, piece);
          pos += piece.length;
          at += piece.length;
          this.progress.set(this.sink.received);
          await put;
        }
      } finally {
        release(chunk);
      }
    }
    if (pos < claim.end) {
      if (this.single && claim.end === Number.POSITIVE_INFINITY) {
        // A body of unknown length (no Content-Length) ends when the server closes: that was all of it.
        this.setTotal(pos);
        return;
      }
      throw new RetryableError(`the connection closed at byte ${pos} of ${this.state.total ?? "?"}`);
    }
  }

  /**
   * Grows the claim while its answer runs on: at once when the next piece is free and within the window, after
   * waiting for the hash to catch up when only the window stands in the way (the socket pauses meanwhile).
   */
  private async extend(claim: Claim, answerEnd: number): Promise<boolean> {
    while (claim.end < answerEnd && !this.over) {
      if (this.plan.extend(claim)) return true;
      if (!this.plan.nextInLine(claim)) return false;
      await this.changed();
    }
    return false;
  }

  /** Checks an answer against the claim and what is known of the file; returns where its body ends. */
  private async accept(res: FollowedResponse & { fresh: boolean }, claim: Claim): Promise<number> {
    const { job } = this;
    const validator = strongValidator(res.headers);
    if (res.statusCode === 206 && !this.single) {
      const range = parseContentRange(headerValue(res.headers, "content-range"));
      if (range?.start !== claim.pos || range.end === undefined || range.total === undefined) {
        throw new Restart("the server answered with another range than the one asked for", false);
      }
      if (this.state.total !== undefined && range.total !== this.state.total) {
        throw new Restart("the file on the server changed size", false);
      }
      if (
        this.state.validator !== undefined &&
        validator !== undefined &&
        validator !== this.state.validator
      ) {
        throw new Restart("the file on the server changed", false);
      }
      if (this.state.total === undefined) await this.learn(range.total, validator);
      return range.end + 1;
    }
    if (res.statusCode === 200) {
      const length = Number(headerValue(res.headers, "content-length"));
      const total = Number.isSafeInteger(length) ? length : undefined;
      if (claim.pos === 0 && this.sink.written.empty && this.state.total === undefined) {
        // The first answer, from zero: a server without Range support, or one that ignored it. One stream it is.
        this.single = true;
        this.ramp.on = false;
        if (total !== undefined) await this.learn(total, validator);
        else claim.end = Number.POSITIVE_INFINITY;
        return total ?? Number.POSITIVE_INFINITY;
      }
      const same = validator === this.state.validator || validator === undefined;
      throw new Restart(
        same ? "the server did not resume (answered 200)" : "the file on the server changed",
        same,
      );
    }
    if (res.statusCode === 416) {
      const range = parseContentRange(headerValue(res.headers, "content-range"));
      if (range?.total === 0 && this.state.total === undefined) {
        await this.learn(0, validator);
        claim.end = 0;
        return 0;
      }
      throw new Restart("the server rejected the resume position (416)", false);
    }
    if (!res.fresh && res.crossOrigin && LINK_REFUSED.has(res.statusCode)) {
      this.link.expire(res.url);
      throw new LinkExpired();
    }
    if (res.fresh && !res.crossOrigin && res.statusCode === 404 && this.state.total !== undefined) {
      // It was there when the download started: deleted meanwhile, or replaced by a new upload under a new URL.
      throw new ArtifactsError(
        "NOT_FOUND",
        `${job.label} disappeared from ${redactUrl(res.url)} during the download (deleted, or replaced by a new upload). Run the command again to fetch what is published now.`,
        { status: 404, url: redactUrl(res.url) },
      );
    }
    throw failureFor(
      res.statusCode,
      res.headers,
      {
        what: job.label,
        url: res.url,
        hasToken: "authorization" in job.credentials,
        crossOrigin: res.crossOrigin,
      },
      job.opts,
    );
  }

  /** The first answer told the size and version of the file: the plan, the state and the space check follow. */
  private async learn(total: number, validator: string | undefined): Promise<void> {
    this.setTotal(total, validator);
    if (this.job.opts.expectedBytes === undefined)
      await ensureFreeSpace(this.job.dir, total - this.sink.received);
    if (validator === undefined && !this.job.expected) {
      // Ranges fetched apart could come from two versions of the file, and nothing would tell: one stream.
      this.ramp.on = false;
    } else if (this.job.opts.adaptive === false && !this.single) {
      this.ramp.on = false;
      this.target = this.job.connections;
      while (this.workers.length < this.target) this.spawn();
    }
  }

  /** The file is `total` bytes: the state, the assembler, the plan and the progress all know it from now on. */
  private setTotal(total: number, validator?: string): void {
    this.state = { ...this.state, total, ...(validator ? { validator } : {}) };
    this.sink.setTotal(total);
    this.plan.setTotal(total);
    this.progress.setTotal(total);
    this.writer.touch();
  }

  /** The newest connection delivered its first bytes: measure the throughput from now on. */
  private rampFrom(now: number): void {
    const ramp = this.ramp;
    ramp.ready = true;
    ramp.since = now;
    ramp.bytes = this.fetched;
    ramp.busy = performance.eventLoopUtilization();
    // A connection that took long to deliver (TLS, a long round trip) also takes long to reach its speed.
    ramp.settleMs = Math.max(RAMP_MEASURE_MS, 2 * (now - ramp.spawned));
  }

  /**
   * Doubles the connections while the ones added last each still raised the throughput by at least half of what
   * an earlier connection brings, up to the cap, and the event loop has time to spare. When they did not, only as
   * many stay as the gain pays for (none on a link one connection fills); the others retire after their current
   * range.
   */
  private adapt(): void {
    const ramp = this.ramp;
    if (!ramp.on || !ramp.ready || this.state.total === undefined) return;
    const now = performance.now();
    const elapsed = now - ramp.since;
    if (elapsed < ramp.settleMs) return;
    const rate = (this.fetched - ramp.bytes) / elapsed;
    const n = this.target;
    if (ramp.before > 0) {
      const each = ramp.rate / ramp.before;
      const added = n - ramp.before;
      if (rate - ramp.rate < RAMP_GAIN * each * added) {
        ramp.on = false;
        this.target = ramp.before + Math.max(0, Math.round((rate - ramp.rate) / each));
        this.wakeAll();
        return;
      }
    }
    const more = Math.min(n, this.job.connections - n);
    const busy = performance.eventLoopUtilization(ramp.busy).utilization;
    if (
      more <= 0 ||
      busy > RAMP_MAX_BUSY ||
      this.plan.unclaimed < (n + more) * pieceBytes(this.job.connections)
    ) {
      ramp.on = false;
      return;
    }
    ramp.rate = rate;
    ramp.before = n;
    ramp.ready = false;
    this.target = n + more;
    for (let i = 0; i < more; i++) this.spawn();
  }
}

/** Where adding connections stands: measuring the throughput of the newest ones, or done. */
function newRamp() {
  return {
    on: false,
    /** The newest connections have delivered: the throughput is being measured. */
    ready: false,
    since: 0,
    bytes: 0,
    /** Throughput with the connections there were before the newest, and how many there were. */
    rate: 0,
    before: 0,
    settleMs: RAMP_MEASURE_MS,
    spawned: 0,
    /** The event loop's use at the start of the measurement. */
    busy: performance.eventLoopUtilization(),
  };
}

/** Refusal of a link resolved earlier: not a failure, a reason to resolve it again. */
class LinkExpired extends Error {}

/** Pieces small enough that the window holds two per connection, large enough that requests stay few. */
function pieceBytes(connections: number): number {
  return Math.min(16 << 20, Math.max(1 << 20, Math.floor(WINDOW_BYTES / (2 * connections))));
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

function parseContentRange(
  value: string | undefined,
): { start?: number; end?: number; total?: number } | undefined {
  if (!value) return undefined;
  const m = /^bytes\s+(?:(\d+)-(\d+)|\*)\/(\d+|\*)$/.exec(value.trim());
  if (!m) return undefined;
  const r: { start?: number; end?: number; total?: number } = {};
  if (m[1] !== undefined) r.start = Number(m[1]);
  if (m[2] !== undefined) r.end = Number(m[2]);
  if (m[3] !== "*") r.total = Number(m[3]);
  return r;
}

/** If-Range needs a strong validator: a weak ETag would never match and always restart from zero. */
function strongValidator(headers: Record<string, string | string[] | undefined>): string | undefined {
  const etag = headerValue(headers, "etag");
  if (etag && !etag.startsWith("W/")) return etag;
  return headerValue(headers, "last-modified");
}
