import { randomBytes } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { compress } from "zstd-napi";
import {
  type ArtifactsError,
  fetchArtifactDir,
  fetchArtifactFile,
  fetchReleaseAsset,
  GitHubClient,
  ImageCache,
  parseChecksums,
} from "../src/index.js";
import { FakeGitHub, makeZip, sha256 } from "./fake-github.js";

const TOKEN = "ghp_test_token_value";
const REPO = "acme/images";
const SHA = "c".repeat(40);

let fake: FakeGitHub;
let dir: string;
let messages: string[];
let client: GitHubClient;

beforeEach(async () => {
  fake = await FakeGitHub.start({ token: TOKEN });
  dir = await mkdtemp(join(tmpdir(), "artifacts-fetch-"));
  messages = [];
  client = new GitHubClient({ apiUrl: fake.apiUrl, token: TOKEN, retryDelayMs: 10 });
});

afterEach(async () => {
  expect(fake.requests.filter((r) => r.server === "storage" && r.headers.authorization)).toEqual([]);
  await fake.close();
  await rm(dir, { recursive: true, force: true });
});

const common = () => ({ client, retryDelayMs: 10, onMessage: (m: string) => messages.push(m) });
const storageGets = () => fake.requests.filter((r) => r.server === "storage").length;

async function codeOf(p: Promise<unknown>): Promise<string> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  return (err as ArtifactsError).code;
}

describe("fetchReleaseAsset", () => {
  it("verifies against the asset digest and serves the second request from the content-addressed cache", async () => {
    const disk = randomBytes(2 * 1024 * 1024);
    fake.addRelease(REPO, { tag: "v1", assets: [{ name: "disk.qcow2", content: disk }] });
    const release = await client.releaseByTag(REPO, "v1");
    const cache = new ImageCache(join(dir, "cache"));
    const first = await fetchReleaseAsset({ ...common(), release, asset: "disk.qcow2", cache });
    expect(first).toMatchObject({ verified: "digest", cached: false, sha256: sha256(disk) });
    expect(first.path).toBe(join(cache.entryPath(sha256(disk)), "disk.qcow2"));
    expect((await readFile(first.path)).equals(disk)).toBe(true);
    expect(await cache.list()).toEqual([sha256(disk)]);

    const before = storageGets();
    const dest = join(dir, "images", "disk.qcow2");
    const second = await fetchReleaseAsset({ ...common(), release, asset: /\.qcow2$/, cache, dest });
    expect(second).toMatchObject({ cached: true, path: dest });
    expect(storageGets()).toBe(before);
    expect((await readFile(dest)).equals(disk)).toBe(true);
  });

  it("resumes an interrupted download through the cache's staging directory", async () => {
    const disk = randomBytes(4 * 1024 * 1024);
    fake.addRelease(REPO, { tag: "v9", assets: [{ name: "disk.qcow2", content: disk }] });
    const release = await client.releaseByTag(REPO, "v9");
    const cache = new ImageCache(join(dir, "cache"));
    fake.fault("/blob/", { kind: "drop", afterBytes: 3 * 1024 * 1024 });
    const first = fetchReleaseAsset({ ...common(), retries: 0, release, asset: "disk.qcow2", cache });
    expect(await codeOf(first)).toBe("NETWORK");
    const second = await fetchReleaseAsset({ ...common(), release, asset: "disk.qcow2", cache });
    expect((await readFile(second.path)).equals(disk)).toBe(true);
    const last = fake.requests.filter((r) => r.server === "storage").at(-1)!;
    expect(last.headers.range).toMatch(/^bytes=[1-9]\d*-$/);
    expect(await readdir(join(dir, "cache", ".staging"))).toEqual([]);
  });

  it("falls back to a SHA256SUMS asset, and catches a file that does not match it", async () => {
    const good = Buffer.from("good image");
    const sums = `${sha256(good)}  disk.img\n${"f".repeat(64)} *other.img\n`;
    fake.addRelease(REPO, {
      tag: "v2",
      assets: [
        { name: "disk.img", content: good, digest: "none" },
        { name: "other.img", content: Buffer.from("tampered"), digest: "none" },
        { name: "SHA256SUMS", content: Buffer.from(sums), digest: "none" },
      ],
    });
    const release = await client.releaseByTag(REPO, "v2");
    const ok = await fetchReleaseAsset({
      ...common(),
      release,
      asset: "disk.img",
      dest: join(dir, "disk.img"),
    });
    expect(ok.verified).toBe("checksums");
    const bad = fetchReleaseAsset({ ...common(), release, asset: "other.img", dest: join(dir, "other.img") });
    expect(await codeOf(bad)).toBe("CHECKSUM_MISMATCH");
    await expect(stat(join(dir, "other.img"))).rejects.toThrow();
  });

  it("says clearly when nothing could be verified", async () => {
    fake.addRelease(REPO, {
      tag: "v3",
      assets: [{ name: "disk.img", content: Buffer.from("x"), digest: "none" }],
    });
    const release = await client.releaseByTag(REPO, "v3");
    const result = await fetchReleaseAsset({
      ...common(),
      release,
      asset: "disk.img",
      dest: join(dir, "disk.img"),
    });
    expect(result.verified).toBe("none");
    expect(messages.some((m) => m.includes("NOT verified"))).toBe(true);
  });

  it("does not continue a partial download of an asset since replaced, and says what it took", async () => {
    const before = randomBytes(4 * 1024 * 1024);
    const after = randomBytes(4 * 1024 * 1024);
    fake.addRelease(REPO, {
      tag: "latest",
      assets: [{ name: "disk.qcow2", content: before, digest: "none" }],
    });
    const dest = join(dir, "disk.qcow2");
    fake.fault("/blob/", { kind: "drop", afterBytes: 2 * 1024 * 1024 });
    const first = fetchReleaseAsset({
      ...common(),
      retries: 0,
      release: await client.releaseByTag(REPO, "latest"),
      asset: "disk.qcow2",
      dest,
    });
    expect(await codeOf(first)).toBe("NETWORK");
    // Overwritten where it is stored: same id and URL, a new updated_at (no digest to tell them apart).
    fake.replaceAsset(REPO, "latest", "disk.qcow2", after, { inPlace: true });
    const mark = fake.requests.length;
    const second = await fetchReleaseAsset({
      ...common(),
      release: await client.releaseByTag(REPO, "latest"),
      asset: "disk.qcow2",
      dest,
    });
    expect((await readFile(dest)).equals(after)).toBe(true);
    const storage = fake.requests.slice(mark).filter((r) => r.server === "storage");
    expect(storage.map((r) => [r.headers.range, r.headers["if-range"]])).toEqual([["bytes=0-", undefined]]);
    expect(second.transfer).toMatchObject({ bytes: after.length, resumed: 0, connections: 1 });
    expect(second.transfer!.seconds).toBeGreaterThan(0);
  });

  it("decompresses a .zst asset and names a missing asset's alternatives", async () => {
    const raw = Buffer.alloc(3 * 1024 * 1024, 42);
    const zst = compress(raw);
    fake.addRelease(REPO, { tag: "v4", assets: [{ name: "state.savevm.zst", content: zst }] });
    const release = await client.releaseByTag(REPO, "v4");
    const result = await fetchReleaseAsset({
      ...common(),
      release,
      asset: "state.savevm.zst",
      dest: join(dir, "state"),
    });
    expect(result.sha256).toBe(sha256(zst));
    expect((await readFile(join(dir, "state"))).equals(raw)).toBe(true);
    const missing = await fetchReleaseAsset({
      ...common(),
      release,
      asset: "nope",
      dest: join(dir, "x"),
    }).catch((e: Error) => e);
    expect((missing as ArtifactsError).code).toBe("NO_ASSET");
    expect((missing as Error).message).toContain("state.savevm.zst");
  });
});

describe("artifacts", () => {
  async function artifactWith(zip: Buffer, extra: { expired?: boolean; digest?: string } = {}) {
    fake.addRun(REPO, { id: 5, headSha: SHA, artifacts: [{ name: "image", content: zip, ...extra }] });
    return client.runArtifact(REPO, 5, { artifactName: "image" });
  }

  it("extracts the wanted file, expanding a nested zip, and removes the zip and working files", async () => {
    const inner = makeZip([
      { name: "image/disk.qcow2", data: "qcow" },
      { name: "image/image.json", data: "{}" },
    ]);
    const artifact = await artifactWith(makeZip([{ name: "bundle.zip", data: inner }]));
    const dest = join(dir, "out", "disk.qcow2");
    const result = await fetchArtifactFile({ ...common(), artifact, dest, file: "disk.qcow2" });
    expect(result).toMatchObject({ path: dest, verified: "digest", cached: false });
    expect(await readFile(dest, "utf8")).toBe("qcow");
    expect(await readdir(join(dir, "out"))).toEqual(["disk.qcow2"]);
  });

  it("extracts a whole artifact as a directory, through the cache", async () => {
    const artifact = await artifactWith(
      makeZip([
        { name: "image.json", data: '{"schema":1}' },
        { name: "boot/vmlinuz", data: "kernel" },
      ]),
    );
    const cache = new ImageCache(join(dir, "cache"));
    const first = await fetchArtifactDir({ ...common(), artifact, cache });
    expect(await readFile(join(first.path, "boot", "vmlinuz"), "utf8")).toBe("kernel");
    const dest = join(dir, "image");
    const again = await fetchArtifactDir({ ...common(), artifact, cache, dest });
    expect(again.cached).toBe(true);
    expect(await readFile(join(dest, "image.json"), "utf8")).toBe('{"schema":1}');
    // The cache entry survives being handed out.
    expect(await readFile(join(first.path, "image.json"), "utf8")).toBe('{"schema":1}');
    expect(await readdir(join(dir, "cache"))).toEqual([".staging", `sha256-${artifact.sha256}`]);
    expect(await readdir(join(dir, "cache", ".staging"))).toEqual([]);
  });

  it("refuses ../ entries and symlinks, writes nothing outside, and removes the zip", async () => {
    for (const evil of [
      [
        { name: "ok.txt", data: "fine" },
        { name: "../escape.txt", data: "pwned" },
      ],
      [{ name: "link", symlinkTo: "/etc" }],
    ]) {
      const artifact = await artifactWith(makeZip(evil));
      const dest = join(dir, "out", "file");
      expect(await codeOf(fetchArtifactFile({ ...common(), artifact, dest }))).toBe("UNSAFE_ZIP");
      // Only the (empty) destination directory remains: no escaped file, no zip, no half-extracted tree.
      expect(await readdir(dir, { recursive: true })).toEqual(["out"]);
      await rm(join(dir, "out"), { recursive: true });
      fake = await restart(fake);
    }
  });

  it("rejects expired artifacts, zips without a token, and damaged zips", async () => {
    const artifact = await artifactWith(makeZip([{ name: "a", data: "a" }]));
    const dest = join(dir, "a");
    expect(
      await codeOf(fetchArtifactFile({ ...common(), artifact: { ...artifact, expired: true }, dest })),
    ).toBe("ARTIFACT_EXPIRED");
    const anonymous = new GitHubClient({ apiUrl: fake.apiUrl, token: null });
    expect(await codeOf(fetchArtifactFile({ ...common(), client: anonymous, artifact, dest }))).toBe(
      "MISSING_TOKEN",
    );

    const damaged = Buffer.from("PK\u0003\u0004 this is not a zip");
    fake.addRun(REPO, { id: 6, headSha: SHA, artifacts: [{ name: "bad", content: damaged }] });
    const bad = await client.runArtifact(REPO, 6, { artifactName: "bad" });
    expect(await codeOf(fetchArtifactFile({ ...common(), artifact: bad, dest }))).toBe("ZIP_FAILED");
    expect(await readdir(dir)).toEqual([]);
  });

  it("asks the API again for the zip's link when it expires during the download", async () => {
    fake = await restart(fake, { bytesPerSecond: 8 * 1024 * 1024, linkTtlMs: 60_000 });
    const disk = randomBytes(24 * 1024 * 1024);
    const artifact = await artifactWith(makeZip([{ name: "disk.qcow2", data: disk }]));
    let expired = false;
    const result = await fetchArtifactFile({
      ...common(),
      artifact,
      dest: join(dir, "disk.qcow2"),
      connections: 4,
      adaptive: false,
      onProgress: (p) => {
        if (!expired && p.bytesDone > 4 * 1024 * 1024) {
          expired = true;
          fake.expireLinks();
        }
      },
    });
    expect(sha256(await readFile(result.path))).toBe(sha256(disk));
    const zipLinks = fake.requests.filter((r) => r.server === "api" && r.url.endsWith("/zip"));
    expect(zipLinks.length).toBeGreaterThanOrEqual(2);
    expect(fake.requests.some((r) => r.server === "storage" && r.status === 403)).toBe(true);
    expect(result.transfer?.connections).toBe(4);
  });

  it("turns the server's 410 for an artifact that expired after listing into ARTIFACT_EXPIRED", async () => {
    const artifact = await artifactWith(makeZip([{ name: "a", data: "a" }]));
    fake.fault("/zip", {
      kind: "status",
      status: 410,
      body: JSON.stringify({ message: "Artifact has expired" }),
    });
    expect(await codeOf(fetchArtifactFile({ ...common(), artifact, dest: join(dir, "x") }))).toBe(
      "ARTIFACT_EXPIRED",
    );
  });
});

describe("parseChecksums", () => {
  it("reads GNU and BSD formats", () => {
    const hex = "ab".repeat(32);
    const sums = parseChecksums(
      `${hex}  dir/a.img\n${hex.toUpperCase()} *b.img\nSHA256 (c.img) = ${hex}\n\n# x`,
    );
    expect([...sums.entries()]).toEqual([
      ["a.img", hex],
      ["b.img", hex],
      ["c.img", hex],
    ]);
  });
});

async function restart(
  old: FakeGitHub,
  opts: Parameters<typeof FakeGitHub.start>[0] = {},
): Promise<FakeGitHub> {
  await old.close();
  const next = await FakeGitHub.start({ token: TOKEN, ...opts });
  client = new GitHubClient({ apiUrl: next.apiUrl, token: TOKEN, retryDelayMs: 10 });
  return next;
}
