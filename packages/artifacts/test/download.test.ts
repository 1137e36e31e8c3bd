import { randomBytes } from "node:crypto";
import {
  mkdtemp,
  readdir,
  readFile,
  readlink,
  realpath,
  rm,
  stat,
  statfs,
  symlink,
  writeFile,
} from "node:fs/promises";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { compress } from "zstd-napi";
import { ArtifactsError, type DownloadOptions, download, GitHubClient, type Progress } from "../src/index.js";
import { FakeGitHub, type RequestRecord, sha256 } from "./fake-github.js";

const TOKEN = "ghp_test_token_value";
const REPO = "acme/images";
const MiB = 1024 * 1024;

let fake: FakeGitHub;
let dir: string;
let messages: string[];

beforeEach(async () => {
  fake = await FakeGitHub.start({ token: TOKEN });
  dir = await mkdtemp(join(tmpdir(), "artifacts-dl-"));
  messages = [];
});

afterEach(async () => {
  // Every test downloads through a redirect: the token must never have reached the storage origin.
  const leaked = fake.requests.filter((r) => r.server === "storage" && r.headers.authorization !== undefined);
  expect(leaked).toEqual([]);
  await fake.close();
  await rm(dir, { recursive: true, force: true });
});

async function publish(content: Buffer, name = "image.qcow2"): Promise<string> {
  fake.addRelease(REPO, { tag: "v1", assets: [{ name, content }] });
  const release = await new GitHubClient({ apiUrl: fake.apiUrl, token: TOKEN }).releaseByTag(REPO, "v1");
  return release.assets[0]!.url;
}

function options(url: string, extra: Partial<DownloadOptions> = {}): DownloadOptions {
  return {
    url,
    dest: join(dir, "image.qcow2"),
    headers: { authorization: `Bearer ${TOKEN}`, accept: "application/octet-stream" },
    retryDelayMs: 10,
    onMessage: (m) => messages.push(m),
    ...extra,
  };
}

const storageGets = () => fake.requests.filter((r) => r.server === "storage");
const assetApiGets = () =>
  fake.requests.filter((r) => r.server === "api" && r.url.includes("/releases/assets/"));

/** A state file as an earlier, interrupted run leaves it. */
async function writeState(url: string, state: { sha256?: string; total: number; done: [number, number][] }) {
  await writeFile(join(dir, "image.qcow2.part.json"), JSON.stringify({ version: 2, url, ...state }));
}

async function leftovers(): Promise<string[]> {
  return (await readdir(dir)).filter((n) => n !== "image.qcow2");
}

/** Files under `dir` this process holds open (Linux: /proc/self/fd). */
async function openUnder(under: string): Promise<string[]> {
  const prefix = `${await realpath(under)}/`;
  const fds = await readdir("/proc/self/fd");
  const targets = await Promise.all(fds.map((fd) => readlink(`/proc/self/fd/${fd}`).catch(() => "")));
  return targets.filter((t) => t.startsWith(prefix));
}

describe("download", () => {
  it("follows the redirect to storage, verifies the digest and leaves only the final file", async () => {
    const content = randomBytes(3 * MiB);
    const url = await publish(content);
    const result = await download(options(url, { expectedSha256: `sha256:${sha256(content)}` }));
    expect(result).toMatchObject({
      sha256: sha256(content),
      bytes: content.length,
      verified: true,
      resumedFrom: 0,
    });
    expect((await readFile(result.path)).equals(content)).toBe(true);
    expect(await leftovers()).toEqual([]);
    expect(assetApiGets()[0]!.headers.authorization).toBe(`Bearer ${TOKEN}`);
  });

  it("resumes with Range and If-Range after the connection drops mid-body, on the same link while it works", async () => {
    const content = randomBytes(4 * MiB);
    const url = await publish(content);
    fake.fault("/blob/", { kind: "drop", afterBytes: 1.5 * MiB });
    const result = await download(options(url, { expectedSha256: sha256(content) }));
    expect(result.sha256).toBe(sha256(content));
    expect((await readFile(result.path)).equals(content)).toBe(true);
    const [first, second] = storageGets();
    expect(first!.headers.range).toBe("bytes=0-");
    expect(second!.headers.range).toMatch(/^bytes=[1-9]\d*-$/);
    expect(second!.headers["if-range"]).toMatch(/^"/);
    expect(second!.url).toBe(first!.url);
    expect(assetApiGets()).toHaveLength(1);
    expect(result.fetchedBytes).toBe(content.length);
    expect(messages.some((m) => m.includes("retrying"))).toBe(true);
  });

  it("keeps every byte when one request runs on over several pieces", async () => {
    const content = randomBytes(40 * MiB);
    const url = await publish(content);
    const result = await download(options(url, { expectedSha256: sha256(content), connections: 1 }));
    expect(result).toMatchObject({ connections: 1, fetchedBytes: content.length, verified: true });
    expect(storageGets().map((r) => r.headers.range)).toEqual(["bytes=0-"]);
  });

  it("retries 5xx answers with backoff, then succeeds", async () => {
    const content = randomBytes(MiB);
    const url = await publish(content);
    fake.fault("/releases/assets/", { kind: "status", status: 500 }, { kind: "status", status: 503 });
    fake.fault("/blob/", { kind: "status", status: 502 });
    const result = await download(options(url, { expectedSha256: sha256(content) }));
    expect(result.verified).toBe(true);
    expect(fake.pendingFaults()).toBe(0);
    expect(assetApiGets()).toHaveLength(4);
  });

  it("gives up after the configured retries with a NETWORK error and keeps nothing under the final name", async () => {
    const url = await publish(randomBytes(MiB));
    fake.fault(
      "/releases/assets/",
      ...Array.from({ length: 3 }, () => ({ kind: "status" as const, status: 500 })),
    );
    const err = await download(options(url, { retries: 2 })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ArtifactsError);
    expect((err as ArtifactsError).code).toBe("NETWORK");
    expect((err as Error).message).toMatch(/after 3 attempts/);
    await expect(stat(join(dir, "image.qcow2"))).rejects.toThrow();
  });

  it("honours retry-after on 429", async () => {
    const content = randomBytes(MiB);
    const url = await publish(content);
    fake.fault("/releases/assets/", { kind: "status", status: 429, headers: { "retry-after": "1" } });
    const result = await download(options(url, { expectedSha256: sha256(content) }));
    expect(result.verified).toBe(true);
    expect(messages.some((m) => /rate limited .*retrying in 1 s/.test(m))).toBe(true);
  });

  it("names the rate limit, not the network, when rate limits use up the retries", async () => {
    const url = await publish(randomBytes(1024));
    const limited = { kind: "status" as const, status: 429, headers: { "retry-after": "0" } };
    fake.fault("/releases/assets/", limited, limited, limited);
    const err = await download(options(url, { retries: 2 })).catch((e: unknown) => e);
    expect((err as ArtifactsError).code).toBe("RATE_LIMITED");
  });

  it("refuses to wait past the cap for a rate-limit reset, saying when it resets", async () => {
    const url = await publish(randomBytes(MiB));
    const reset = Math.floor(Date.now() / 1000) + 3600;
    fake.fault("/releases/assets/", {
      kind: "status",
      status: 403,
      headers: { "x-ratelimit-remaining": "0", "x-ratelimit-reset": String(reset) },
    });
    const err = await download(options(url, { maxRateLimitWaitMs: 60_000 })).catch((e: unknown) => e);
    expect((err as ArtifactsError).code).toBe("RATE_LIMITED");
    expect((err as Error).message).toContain(new Date(reset * 1000).toISOString());
  });

  it("deletes the download and says so when the digest does not match", async () => {
    const url = await publish(randomBytes(MiB));
    const err = await download(options(url, { expectedSha256: "0".repeat(64) })).catch((e: unknown) => e);
    expect((err as ArtifactsError).code).toBe("CHECKSUM_MISMATCH");
    expect((err as Error).message).toMatch(/deleted/);
    expect(await readdir(dir)).toEqual([]);
  });

  it("restarts from zero when the server ignores Range", async () => {
    const content = randomBytes(3 * MiB);
    const url = await publish(content);
    fake.fault("/blob/", { kind: "drop", afterBytes: MiB }, { kind: "ignore-range" });
    const result = await download(options(url, { expectedSha256: sha256(content) }));
    expect((await readFile(result.path)).equals(content)).toBe(true);
    expect(messages.some((m) => m.includes("restarting from zero"))).toBe(true);
  });

  it("resumes a .part left by an earlier run", async () => {
    const content = randomBytes(4 * MiB);
    const url = await publish(content);
    fake.fault("/blob/", { kind: "drop", afterBytes: 2 * MiB });
    const first = await download(options(url, { retries: 0, expectedSha256: sha256(content) })).catch(
      (e: unknown) => e,
    );
    expect((first as ArtifactsError).code).toBe("NETWORK");
    const partSize = (await stat(join(dir, "image.qcow2.part"))).size;
    expect(partSize).toBeGreaterThan(0);
    const second = await download(options(url, { expectedSha256: sha256(content) }));
    expect(second.resumedFrom).toBe(partSize);
    expect((await readFile(second.path)).equals(content)).toBe(true);
    expect(storageGets().at(-1)!.headers.range).toBe(`bytes=${partSize}-`);
    expect(await leftovers()).toEqual([]);
  });

  it("without a validator, resumes an earlier run's .part only when the digest is known", async () => {
    await fake.close();
    fake = await FakeGitHub.start({ token: TOKEN, noEtag: true });
    const content = randomBytes(4 * MiB);
    const url = await publish(content);
    const interrupted = async (expectedSha256?: string) => {
      fake.fault("/blob/", { kind: "drop", afterBytes: 2 * MiB });
      const extra = expectedSha256 ? { expectedSha256 } : {};
      const err = await download(options(url, { retries: 0, ...extra })).catch((e: unknown) => e);
      expect((err as ArtifactsError).code).toBe("NETWORK");
      return download(options(url, extra));
    };
    const verified = await interrupted(sha256(content));
    expect(verified.resumedFrom).toBeGreaterThan(0);
    expect(storageGets().at(-1)!.headers["if-range"]).toBeUndefined();
    const unverified = await interrupted();
    expect(unverified.resumedFrom).toBe(0);
    expect(storageGets().at(-1)!.headers.range).toBe("bytes=0-");
    expect((await readFile(unverified.path)).equals(content)).toBe(true);
  });

  it("without a validator or a digest, a dropped connection starts over from zero instead of resuming", async () => {
    await fake.close();
    fake = await FakeGitHub.start({ token: TOKEN, noEtag: true });
    const before = randomBytes(4 * MiB);
    const after = randomBytes(4 * MiB);
    const url = await publish(before);
    fake.fault("/blob/", { kind: "drop", afterBytes: MiB });
    // The file is overwritten in place, same size, while the cut answer goes out: a resumed range would splice.
    fake.onSent = (request, sent) => {
      if (request.server === "storage" && sent >= MiB && fake.onSent) {
        fake.onSent = undefined;
        fake.replaceAsset(REPO, "v1", "image.qcow2", after, { inPlace: true });
      }
    };
    const result = await download(options(url));
    expect((await readFile(result.path)).equals(after)).toBe(true);
    expect(result).toMatchObject({ verified: false, resumedFrom: 0 });
    expect(storageGets().map((r) => r.headers.range)).toEqual(["bytes=0-", "bytes=0-"]);
    expect(
      messages.some((m) => m.includes("no ETag or Last-Modified") && m.includes("restarting from zero")),
    ).toBe(true);
  });

  it("starts over once when a resumed download does not match its digest", async () => {
    const content = randomBytes(2 * MiB);
    const url = await publish(content);
    const part = join(dir, "image.qcow2.part");
    // A .part from an earlier run whose first bytes came from some other version of the file.
    await writeFile(part, randomBytes(MiB));
    await writeState(url, { sha256: sha256(content), total: content.length, done: [[0, MiB]] });
    const result = await download(options(url, { expectedSha256: sha256(content) }));
    expect(result.resumedFrom).toBe(0);
    expect((await readFile(result.path)).equals(content)).toBe(true);
    expect(messages.some((m) => m.includes("mismatch after resuming"))).toBe(true);
  });

  it("reports a mismatch at once when a resumed download had to start over from zero anyway", async () => {
    const content = randomBytes(MiB);
    const url = await publish(content);
    const wrong = "0".repeat(64);
    // The earlier run believed the file longer than it is: the server refuses the resume position (416).
    await writeFile(join(dir, "image.qcow2.part"), content);
    await writeState(url, { sha256: wrong, total: content.length + 10, done: [[0, content.length]] });
    const err = await download(options(url, { expectedSha256: wrong })).catch((e: unknown) => e);
    expect((err as ArtifactsError).code).toBe("CHECKSUM_MISMATCH");
    expect(messages.some((m) => m.includes("416") && m.includes("restarting from zero"))).toBe(true);
    // No bytes of the earlier run were kept, so a second download could not fare any better.
    expect(messages.some((m) => m.includes("mismatch after resuming"))).toBe(false);
    expect(storageGets().map((r) => r.status)).toEqual([416, 206]);
  });

  it("finishes from the state alone when every range is on disk, cutting off what lies past the end", async () => {
    const content = randomBytes(MiB);
    const url = await publish(content);
    await writeFile(join(dir, "image.qcow2.part"), Buffer.concat([content, Buffer.from("junk")]));
    await writeState(url, { sha256: sha256(content), total: content.length, done: [[0, content.length]] });
    const done = await download(options(url, { expectedSha256: sha256(content) }));
    expect(done).toMatchObject({ resumedFrom: content.length, fetchedBytes: 0 });
    expect(storageGets()).toEqual([]);
    expect((await readFile(done.path)).equals(content)).toBe(true);
  });

  it("restarts from zero when the server refuses the resume position (416)", async () => {
    const content = randomBytes(MiB);
    const url = await publish(content);
    // The earlier run believed the file longer than it is.
    await writeFile(join(dir, "image.qcow2.part"), content);
    await writeState(url, {
      sha256: sha256(content),
      total: content.length + 10,
      done: [[0, content.length]],
    });
    const redone = await download(options(url, { expectedSha256: sha256(content) }));
    expect((await readFile(redone.path)).equals(content)).toBe(true);
    expect(messages.some((m) => m.includes("416"))).toBe(true);
    expect(storageGets().at(-1)!.headers.range).toBe("bytes=0-");
  });

  it("retries after a stall instead of hanging", async () => {
    const content = randomBytes(2 * MiB);
    const url = await publish(content);
    fake.fault("/blob/", { kind: "stall", afterBytes: MiB });
    const result = await download(options(url, { expectedSha256: sha256(content), stallTimeoutMs: 1000 }));
    expect((await readFile(result.path)).equals(content)).toBe(true);
    expect(messages.some((m) => m.includes("stopped sending data"))).toBe(true);
  });

  it("reports STALLED when the last attempt stalls", async () => {
    const url = await publish(randomBytes(2 * MiB));
    fake.fault("/blob/", { kind: "stall", afterBytes: MiB });
    const err = await download(options(url, { retries: 0, stallTimeoutMs: 1000 })).catch((e: unknown) => e);
    expect((err as ArtifactsError).code).toBe("STALLED");
  });

  it("decompresses zstd while streaming, checks the digest of the compressed bytes, keeps only the .part of a failed run, and resumes", async () => {
    const original = Buffer.concat([randomBytes(2 * MiB), Buffer.alloc(4 * MiB, 7)]);
    const compressed = compress(original);
    const url = await publish(compressed, "image.qcow2.zst");
    fake.fault("/blob/", { kind: "drop", afterBytes: Math.floor(compressed.length / 2) });
    const first = await download(
      options(url, { decompress: "zstd", retries: 0, expectedSha256: sha256(compressed) }),
    ).catch((e: unknown) => e);
    expect((first as ArtifactsError).code).toBe("NETWORK");
    // The .part stays for the next run; its half-decompressed output does not.
    expect((await leftovers()).sort()).toEqual(["image.qcow2.part", "image.qcow2.part.json"]);
    const result = await download(options(url, { decompress: "zstd", expectedSha256: sha256(compressed) }));
    expect(result.resumedFrom).toBeGreaterThan(0);
    expect(result.sha256).toBe(sha256(compressed));
    expect(result.bytes).toBe(compressed.length);
    expect((await readFile(result.path)).equals(original)).toBe(true);
    expect(await leftovers()).toEqual([]);
  });

  it.runIf(process.platform === "linux")(
    "closes its files when finishing fails (the decompressed output cannot be written)",
    async () => {
      const compressed = compress(Buffer.alloc(MiB));
      const url = await publish(compressed, "image.qcow2.zst");
      // Every byte is on disk already, so finishing is what is left; the output goes to a device that is always full.
      await writeFile(join(dir, "image.qcow2.part"), compressed);
      await writeState(url, {
        sha256: sha256(compressed),
        total: compressed.length,
        done: [[0, compressed.length]],
      });
      await symlink("/dev/full", join(dir, "image.qcow2.unpacking"));
      const err = await download(
        options(url, { decompress: "zstd", expectedSha256: sha256(compressed) }),
      ).catch((e: unknown) => e);
      expect((err as ArtifactsError).code).toBe("NO_SPACE");
      expect((err as Error).message).toContain("image.qcow2.unpacking");
      expect(await openUnder(dir)).toEqual([]);
    },
  );

  it("checks free space for the decompressed size the zstd frame header declares", async () => {
    // A frame header declaring 2^60 bytes of content; what follows never gets decompressed.
    const header = Buffer.alloc(14);
    header.writeUInt32LE(0xfd2fb528, 0);
    header[4] = 0xc0; // 8-byte content size, with a window descriptor, no dictionary
    header[5] = 0x50;
    header.writeBigUInt64LE(2n ** 60n, 6);
    const forged = Buffer.concat([header, randomBytes(MiB)]);
    const url = await publish(forged, "huge.qcow2.zst");
    const err = await download(options(url, { decompress: "zstd", expectedSha256: sha256(forged) })).catch(
      (e: unknown) => e,
    );
    expect((err as ArtifactsError).code).toBe("NO_SPACE");
    expect(storageGets()).toHaveLength(1);
  });

  it("reports corrupt zstd data after the digest check passes", async () => {
    const notZstd = randomBytes(MiB);
    const url = await publish(notZstd, "image.qcow2.zst");
    const err = await download(options(url, { decompress: "zstd", expectedSha256: sha256(notZstd) })).catch(
      (e: unknown) => e,
    );
    expect((err as ArtifactsError).code).toBe("DECOMPRESS_FAILED");
    expect(await readdir(dir)).toEqual([]);
  });

  it("checks free space before the first request, naming the directory and the bytes needed", async () => {
    const url = await publish(randomBytes(1024));
    const err = await download(options(url, { expectedBytes: 2 ** 60 })).catch((e: unknown) => e);
    expect((err as ArtifactsError).code).toBe("NO_SPACE");
    expect((err as Error).message).toContain(`Not enough free space in ${dir}: 1048576.0 TiB needed`);
    expect(fake.requests.filter((r) => r.url.includes("/assets/"))).toEqual([]);
  });

  it("counts what the download unpacks into before the first request: as stated, else as large as the download", async () => {
    const url = await publish(randomBytes(1024), "image.qcow2.zst");
    const { bavail, bsize } = await statfs(dir);
    // Fits alone, not with an unpacked output at least as large beside it.
    const threeQuarters = Math.ceil(bavail * bsize * 0.75);
    const refused = async (extra: Partial<DownloadOptions>) => {
      const err = await download(options(url, extra)).catch((e: unknown) => e);
      expect((err as ArtifactsError).code).toBe("NO_SPACE");
      return (err as Error).message;
    };
    expect(await refused({ decompress: "zstd", expectedBytes: threeQuarters })).toMatch(
      new RegExp(
        `^Not enough free space in ${dir}: .* needed \\(.* to download \\+ .* unpacked, assumed at least the download's size\\), `,
      ),
    );
    expect(await refused({ unpackedBeside: true, expectedBytes: threeQuarters })).toContain("assumed");
    const stated = await refused({ decompress: "zstd", expectedBytes: 1024, unpackedBytes: 2 ** 60 });
    expect(stated).toContain("1.00 KiB to download + 1048576.0 TiB unpacked)");
    expect(assetApiGets()).toEqual([]);
    expect(storageGets()).toEqual([]);
  });

  it("stops with ABORTED when the signal fires", async () => {
    const url = await publish(randomBytes(2 * MiB));
    const controller = new AbortController();
    fake.fault("/blob/", { kind: "stall", afterBytes: MiB });
    const pending = download(
      options(url, {
        signal: controller.signal,
        onProgress: (p) => {
          if (p.bytesDone > 0) controller.abort();
        },
      }),
    );
    const err = await pending.catch((e: unknown) => e);
    expect((err as ArtifactsError).code).toBe("ABORTED");
    await expect(stat(join(dir, "image.qcow2"))).rejects.toThrow();
  });

  it("survives a storage server that closes the connection after each answer while the disk applies backpressure", async () => {
    // undici 7 crashed the process here (nodejs/undici#5360); the HTTP layer must not.
    await fake.close();
    fake = await FakeGitHub.start({ token: TOKEN, closeConnections: true });
    const original = randomBytes(8 * MiB);
    const compressed = compress(original);
    const url = await publish(compressed, "image.qcow2.zst");
    for (let i = 0; i < 3; i++) {
      const result = await download(options(url, { decompress: "zstd", expectedSha256: sha256(compressed) }));
      expect((await readFile(result.path)).equals(original)).toBe(true);
    }
    expect(storageGets().map((r) => r.headers.range)).toEqual(["bytes=0-", "bytes=0-", "bytes=0-"]);
  });

  it("takes the size of a body of unknown length from where it ended, for the progress too", async () => {
    const content = randomBytes(2 * MiB);
    // Chunked, without Content-Length: the size is known only at the end.
    const server = createServer((_req, res) => {
      res.writeHead(200);
      res.write(content.subarray(0, MiB));
      res.end(content.subarray(MiB));
    });
    await new Promise<void>((listening) => server.listen(0, "127.0.0.1", listening));
    try {
      const events: Progress[] = [];
      const result = await download({
        url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/image.qcow2`,
        dest: join(dir, "image.qcow2"),
        onProgress: (p) => events.push(p),
      });
      expect(result.bytes).toBe(content.length);
      expect((await readFile(result.path)).equals(content)).toBe(true);
      expect(events.at(-1)).toMatchObject({
        bytesDone: content.length,
        bytesTotal: content.length,
        done: true,
      });
    } finally {
      server.closeAllConnections();
      await new Promise((closed) => server.close(closed));
    }
  });

  it("reports progress with totals, ending with done", async () => {
    const content = randomBytes(2 * MiB);
    const url = await publish(content);
    const events: { bytesDone: number; bytesTotal?: number; done: boolean }[] = [];
    await download(options(url, { onProgress: (p) => events.push(p) }));
    const last = events.at(-1)!;
    expect(last).toMatchObject({ bytesDone: content.length, bytesTotal: content.length, done: true });
  });
});

/** The [start, end) a storage request asked for (open-ended: to the end of the file). */
function requested(r: { headers: { range?: string } }, size: number): [number, number] {
  const m = /^bytes=(\d+)-(\d*)$/.exec(r.headers.range ?? "");
  if (!m) return [0, size];
  return [Number(m[1]), m[2] ? Number(m[2]) + 1 : size];
}

/** A storage request for a bounded range: one connection's piece, not the first request of a download. */
const bounded = (r: RequestRecord) => r.server === "storage" && /^bytes=\d+-\d+$/.test(r.headers.range ?? "");

describe("segmented downloads", () => {
  async function capped(bytesPerSecond: number, extra: Parameters<typeof FakeGitHub.start>[0] = {}) {
    await fake.close();
    fake = await FakeGitHub.start({ token: TOKEN, bytesPerSecond, ...extra });
  }

  it("fetches bounded ranges over several connections that together cover the file once", async () => {
    await capped(8 * MiB);
    const content = randomBytes(32 * MiB);
    const url = await publish(content);
    const result = await download(
      options(url, { expectedSha256: sha256(content), connections: 4, adaptive: false }),
    );
    expect((await readFile(result.path)).equals(content)).toBe(true);
    expect(result.connections).toBe(4);
    expect(result.fetchedBytes).toBe(content.length);
    const starts = storageGets().map((r) => requested(r, content.length)[0]);
    expect(new Set(starts).size).toBe(starts.length);
    expect(starts.length).toBeGreaterThanOrEqual(4);
    expect(storageGets().filter(bounded).length).toBeGreaterThanOrEqual(2);
    // Every ranged request after the first names the ETag, so no range can come from another version.
    expect(
      storageGets().every((r) => r.headers["if-range"] !== undefined || r.headers.range === "bytes=0-"),
    ).toBe(true);
    expect(await leftovers()).toEqual([]);
  });

  it("adds connections while they add throughput, under a cap on each connection", async () => {
    await capped(4 * MiB);
    const content = randomBytes(24 * MiB);
    const url = await publish(content);
    const seen: number[] = [];
    const result = await download(
      options(url, { expectedSha256: sha256(content), onProgress: (p) => seen.push(p.connections ?? 1) }),
    );
    expect((await readFile(result.path)).equals(content)).toBe(true);
    expect(result.connections).toBeGreaterThan(1);
    expect(Math.max(...seen)).toBeGreaterThan(1);
  });

  it("asks the API for a new link when the signed one expires mid-download, which is no failure", async () => {
    await capped(8 * MiB);
    // More pieces than connections, so that some are asked for after the link expired.
    const content = randomBytes(48 * MiB);
    const url = await publish(content);
    let expired = false;
    const result = await download(
      options(url, {
        expectedSha256: sha256(content),
        connections: 4,
        adaptive: false,
        retries: 0,
        onProgress: (p) => {
          if (!expired && p.bytesDone > 4 * MiB) {
            expired = true;
            fake.expireLinks();
          }
        },
      }),
    );
    expect((await readFile(result.path)).equals(content)).toBe(true);
    expect(storageGets().some((r) => r.status === 403)).toBe(true);
    expect(assetApiGets().length).toBeGreaterThanOrEqual(2);
    // The API got the token each time; storage never did (checked after every test).
    expect(assetApiGets().every((r) => r.headers.authorization === `Bearer ${TOKEN}`)).toBe(true);
  });

  it("continues a range from where a dropped connection stopped, fetching no byte twice", async () => {
    await capped(8 * MiB);
    const content = randomBytes(32 * MiB);
    const url = await publish(content);
    fake.fault(bounded, { kind: "drop", afterBytes: MiB });
    const result = await download(
      options(url, { expectedSha256: sha256(content), connections: 4, adaptive: false }),
    );
    expect((await readFile(result.path)).equals(content)).toBe(true);
    expect(result.fetchedBytes).toBe(content.length);
    const gets = storageGets();
    const cut = gets.findIndex(bounded);
    const [start, end] = requested(gets[cut]!, content.length);
    const rest = gets.slice(cut + 1).map((r) => requested(r, content.length)[0]);
    expect(rest.some((s) => s > start && s < end)).toBe(true);
    expect(messages.some((m) => m.includes("closed the connection mid-body"))).toBe(true);
  });

  it("falls back to one stream when the server answers 200 to a Range request", async () => {
    await capped(16 * MiB);
    const content = randomBytes(32 * MiB);
    const url = await publish(content);
    fake.fault(bounded, { kind: "ignore-range" });
    const result = await download(
      options(url, { expectedSha256: sha256(content), connections: 4, adaptive: false }),
    );
    expect((await readFile(result.path)).equals(content)).toBe(true);
    expect(messages.some((m) => m.includes("answered 200") && m.includes("restarting from zero"))).toBe(true);
    // From then on, one request without Range: the last one.
    const plain = storageGets().filter((r) => r.headers.range === undefined);
    expect(plain).toEqual([storageGets().at(-1)]);
    expect(plain[0]!.status).toBe(200);
  });

  it("uses one stream, from the first answer on, with a server that does not do Range", async () => {
    await capped(16 * MiB, { noRanges: true });
    const content = randomBytes(16 * MiB);
    const url = await publish(content);
    const result = await download(
      options(url, { expectedSha256: sha256(content), connections: 4, adaptive: false }),
    );
    expect((await readFile(result.path)).equals(content)).toBe(true);
    expect(storageGets()).toHaveLength(1);
    expect(result).toMatchObject({ connections: 1, fetchedBytes: content.length });
  });

  it("decompresses a .zst fetched over several connections, in order", async () => {
    await capped(8 * MiB);
    const original = Buffer.concat([randomBytes(20 * MiB), Buffer.alloc(8 * MiB, 3)]);
    const compressed = compress(original);
    const url = await publish(compressed, "image.qcow2.zst");
    const result = await download(
      options(url, {
        decompress: "zstd",
        expectedSha256: sha256(compressed),
        connections: 4,
        adaptive: false,
      }),
    );
    expect(result.connections).toBe(4);
    expect((await readFile(result.path)).equals(original)).toBe(true);
    expect(await leftovers()).toEqual([]);
  });

  it("uses one stream when neither a validator nor a digest could tell two versions of the file apart", async () => {
    await capped(8 * MiB, { noEtag: true });
    const before = randomBytes(8 * MiB);
    const url = await publish(before);
    // Overwritten in place, same size, as the first answer starts: any later request would get the new bytes.
    fake.onSent = (request) => {
      if (request.server === "storage" && fake.onSent) {
        fake.onSent = undefined;
        fake.replaceAsset(REPO, "v1", "image.qcow2", randomBytes(before.length), { inPlace: true });
      }
    };
    const result = await download(options(url, { connections: 4, adaptive: false }));
    expect((await readFile(result.path)).equals(before)).toBe(true);
    expect(result.connections).toBe(1);
    expect(storageGets().map((r) => r.headers.range)).toEqual(["bytes=0-"]);
  });

  it("says so when the file disappears from under the download (replaced by a new upload)", async () => {
    await capped(4 * MiB);
    const url = await publish(randomBytes(24 * MiB));
    let replaced = false;
    const err = await download(
      options(url, {
        connections: 2,
        adaptive: false,
        onProgress: (p) => {
          if (!replaced && p.bytesDone > 2 * MiB) {
            replaced = true;
            fake.replaceAsset(REPO, "v1", "image.qcow2", randomBytes(MiB));
            fake.expireLinks();
          }
        },
      }),
    ).catch((e: unknown) => e);
    expect((err as ArtifactsError).code).toBe("NOT_FOUND");
    expect((err as Error).message).toMatch(/disappeared from .* during the download .*Run the command again/);
    await expect(stat(join(dir, "image.qcow2"))).rejects.toThrow();
  });

  it("never mixes two versions: a file overwritten in place between runs is downloaded afresh", async () => {
    const before = randomBytes(8 * MiB);
    const after = randomBytes(8 * MiB);
    const url = await publish(before);
    fake.fault("/blob/", { kind: "drop", afterBytes: 3 * MiB });
    const first = await download(options(url, { retries: 0 })).catch((e: unknown) => e);
    expect((first as ArtifactsError).code).toBe("NETWORK");
    fake.replaceAsset(REPO, "v1", "image.qcow2", after, { inPlace: true });
    const second = await download(options(url));
    expect((await readFile(second.path)).equals(after)).toBe(true);
    expect(messages.some((m) => m.includes("changed"))).toBe(true);
    // The earlier run's bytes were discarded: none of them are in the file.
    expect(second).toMatchObject({ resumedFrom: 0, fetchedBytes: after.length });
  });
});
