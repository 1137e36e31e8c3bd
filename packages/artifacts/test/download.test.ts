import { randomBytes } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { compress } from "zstd-napi";
import { ArtifactsError, type DownloadOptions, download, GitHubClient } from "../src/index.js";
import { FakeGitHub, sha256 } from "./fake-github.js";

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

async function leftovers(): Promise<string[]> {
  return (await readdir(dir)).filter((n) => n !== "image.qcow2");
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

  it("resumes with Range and If-Range after the connection drops mid-body, asking the API for a fresh link", async () => {
    const content = randomBytes(4 * MiB);
    const url = await publish(content);
    fake.fault("/blob/", { kind: "drop", afterBytes: 1.5 * MiB });
    const result = await download(options(url, { expectedSha256: sha256(content) }));
    expect(result.sha256).toBe(sha256(content));
    expect((await readFile(result.path)).equals(content)).toBe(true);
    const [, second] = storageGets();
    expect(second!.headers.range).toMatch(/^bytes=[1-9]\d*-$/);
    expect(second!.headers["if-range"]).toMatch(/^"/);
    // The storage links are single-use, so the retry had to go back to the API.
    expect(assetApiGets()).toHaveLength(2);
    expect(messages.some((m) => m.includes("retrying"))).toBe(true);
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
    expect(storageGets().at(-1)!.headers.range).toBeUndefined();
    expect((await readFile(unverified.path)).equals(content)).toBe(true);
  });

  it("starts over once when a resumed download does not match its digest", async () => {
    const content = randomBytes(2 * MiB);
    const url = await publish(content);
    const part = join(dir, "image.qcow2.part");
    // A .part from an earlier run whose first bytes came from some other version of the file.
    await writeFile(part, randomBytes(MiB));
    await writeFile(`${part}.json`, JSON.stringify({ url, sha256: sha256(content) }));
    const result = await download(options(url, { expectedSha256: sha256(content) }));
    expect(result.resumedFrom).toBe(0);
    expect((await readFile(result.path)).equals(content)).toBe(true);
    expect(messages.some((m) => m.includes("mismatch after resuming"))).toBe(true);
  });

  it("treats 416 on a complete .part as done, and restarts on a .part longer than the file", async () => {
    const content = randomBytes(MiB);
    const url = await publish(content);
    const part = join(dir, "image.qcow2.part");
    const meta = JSON.stringify({ url, sha256: sha256(content) });
    await writeFile(part, content);
    await writeFile(`${part}.json`, meta);
    const done = await download(options(url, { expectedSha256: sha256(content) }));
    expect(done.resumedFrom).toBe(content.length);
    expect(storageGets().at(-1)!.headers.range).toBe(`bytes=${content.length}-`);
    expect((await readFile(done.path)).equals(content)).toBe(true);

    await writeFile(part, Buffer.concat([content, Buffer.from("junk")]));
    await writeFile(`${part}.json`, meta);
    const redone = await download(options(url, { expectedSha256: sha256(content) }));
    expect((await readFile(redone.path)).equals(content)).toBe(true);
    expect(messages.some((m) => m.includes("416"))).toBe(true);
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

  it("decompresses zstd while streaming, checks the digest of the compressed bytes, and resumes", async () => {
    const original = Buffer.concat([randomBytes(2 * MiB), Buffer.alloc(4 * MiB, 7)]);
    const compressed = compress(original);
    const url = await publish(compressed, "image.qcow2.zst");
    fake.fault("/blob/", { kind: "drop", afterBytes: Math.floor(compressed.length / 2) });
    const first = await download(
      options(url, { decompress: "zstd", retries: 0, expectedSha256: sha256(compressed) }),
    ).catch((e: unknown) => e);
    expect((first as ArtifactsError).code).toBe("NETWORK");
    const result = await download(options(url, { decompress: "zstd", expectedSha256: sha256(compressed) }));
    expect(result.resumedFrom).toBeGreaterThan(0);
    expect(result.sha256).toBe(sha256(compressed));
    expect(result.bytes).toBe(compressed.length);
    expect((await readFile(result.path)).equals(original)).toBe(true);
    expect(await leftovers()).toEqual([]);
  });

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

  it("checks free space before the first request", async () => {
    const url = await publish(randomBytes(1024));
    const err = await download(options(url, { expectedBytes: 2 ** 60 })).catch((e: unknown) => e);
    expect((err as ArtifactsError).code).toBe("NO_SPACE");
    expect(fake.requests.filter((r) => r.url.includes("/assets/"))).toEqual([]);
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
    expect(storageGets().every((r) => r.headers.range === undefined)).toBe(true);
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
