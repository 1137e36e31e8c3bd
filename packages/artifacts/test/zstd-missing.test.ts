// zstd-napi is an optional dependency with a native addon: where it did not install, everything but .zst downloads
// works, and a .zst download fails with ZSTD_UNAVAILABLE before it fetches anything.
import { randomBytes } from "node:crypto";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { ArtifactsError, download, GitHubClient } from "../src/index.js";
import { FakeGitHub } from "./fake-github.js";

vi.mock("zstd-napi", () => {
  throw new Error("Cannot find module 'zstd-napi'");
});

const TOKEN = "ghp_test_token_value";
const REPO = "acme/images";
const image = randomBytes(64 * 1024);
let fake: FakeGitHub;
let dir: string;

beforeAll(async () => {
  fake = await FakeGitHub.start({ token: TOKEN });
  dir = await mkdtemp(join(tmpdir(), "artifacts-nozstd-"));
  // Not zstd data: nothing may try to decompress it.
  fake.addRelease(REPO, {
    tag: "v1",
    assets: [
      { name: "image.qcow2", content: image },
      { name: "image.qcow2.zst", content: image },
    ],
  });
});

afterAll(async () => {
  await fake.close();
  await rm(dir, { recursive: true, force: true });
});

async function assetUrl(name: string): Promise<string> {
  const release = await new GitHubClient({ apiUrl: fake.apiUrl, token: TOKEN }).releaseByTag(REPO, "v1");
  return release.assets.find((a) => a.name === name)!.url;
}

const headers = { authorization: `Bearer ${TOKEN}`, accept: "application/octet-stream" };

describe("without zstd-napi", () => {
  it("refuses a .zst download with ZSTD_UNAVAILABLE before fetching a byte", async () => {
    const url = await assetUrl("image.qcow2.zst");
    const err = await download({ url, dest: join(dir, "a.qcow2"), headers, decompress: "zstd" }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ArtifactsError);
    expect((err as ArtifactsError).code).toBe("ZSTD_UNAVAILABLE");
    expect((err as ArtifactsError).message).toContain("download the uncompressed file");
    expect(fake.requests.filter((r) => r.server === "storage")).toEqual([]);
    expect(await readdir(dir)).toEqual([]);
  });

  it("still downloads what needs no decompression", async () => {
    const url = await assetUrl("image.qcow2");
    const result = await download({ url, dest: join(dir, "b.qcow2"), headers });
    expect((await readFile(result.path)).equals(image)).toBe(true);
  });
});
