import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ArtifactsError, discoverToken, GitHubClient } from "../src/index.js";
import { FakeGitHub, makeZip, sha256 } from "./fake-github.js";

const TOKEN = "ghp_test_token_value";
const REPO = "acme/images";
const SHA = "a".repeat(40);
const OTHER_SHA = "b".repeat(40);

let fake: FakeGitHub;
let messages: string[];

beforeEach(async () => {
  fake = await FakeGitHub.start({ token: TOKEN, pageSize: 2 });
  messages = [];
});

afterEach(async () => {
  await fake.close();
});

function client(extra: ConstructorParameters<typeof GitHubClient>[0] = {}): GitHubClient {
  return new GitHubClient({
    apiUrl: fake.apiUrl,
    token: TOKEN,
    retryDelayMs: 10,
    onMessage: (m) => messages.push(m),
    ...extra,
  });
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ArtifactsError);
  return (err as ArtifactsError).code;
}

const zip = makeZip([{ name: "image.qcow2", data: "disk" }]);

describe("releases", () => {
  beforeEach(() => {
    fake.addRelease(REPO, { tag: "emulator-v1", assets: [{ name: "a.qcow2", content: Buffer.alloc(10) }] });
    fake.addRelease(REPO, {
      tag: "emulator-v2",
      assets: [
        { name: "a.qcow2", content: Buffer.alloc(100, 1) },
        { name: "b.txt", content: Buffer.from("x"), digest: "none" },
      ],
    });
    fake.addRelease(REPO, { tag: "other-v1" });
    fake.addRelease(REPO, { tag: "emulator-v3-rc1", prerelease: true });
    fake.addRelease(REPO, { tag: "emulator-v4", draft: true });
  });

  it("lists every page, newest first, filtered by prefix, with latest, sizes and digests", async () => {
    const releases = await client().listReleases(REPO, { prefix: "emulator-" });
    expect(releases.map((r) => r.tag)).toEqual([
      "emulator-v4",
      "emulator-v3-rc1",
      "emulator-v2",
      "emulator-v1",
    ]);
    const pages = fake.requests.filter((r) => r.url.includes("/releases?"));
    expect(pages.length).toBe(3);
    const v2 = releases.find((r) => r.tag === "emulator-v2")!;
    expect(v2).toMatchObject({ latest: false, size: 101, draft: false, prerelease: false });
    expect(v2.assets[0]!.sha256).toBe(sha256(Buffer.alloc(100, 1)));
    expect(v2.assets[1]!.sha256).toBeUndefined();
    expect(releases.find((r) => r.tag === "emulator-v4")).toMatchObject({ draft: true, latest: false });
    expect(releases.find((r) => r.tag === "emulator-v3-rc1")).toMatchObject({ prerelease: true });
    const all = await client().listReleases(REPO);
    expect(all.filter((r) => r.latest).map((r) => r.tag)).toEqual(["other-v1"]);
  });

  it("finds a release by tag and says how to recover from a missing one", async () => {
    expect((await client().releaseByTag(REPO, "emulator-v1")).assets[0]!.size).toBe(10);
    expect(await codeOf(client().releaseByTag(REPO, "nope"))).toBe("NO_RELEASE");
    expect((await client().latestRelease(REPO)).tag).toBe("other-v1");
  });

  it("takes the API base from GITHUB_API_URL", async () => {
    const c = new GitHubClient({ env: { GITHUB_API_URL: `${fake.apiUrl}/` }, token: null });
    expect(c.apiUrl).toBe(fake.apiUrl);
    expect((await c.listReleases(REPO)).length).toBe(5);
    expect(fake.requests.every((r) => r.headers.authorization === undefined)).toBe(true);
  });

  it("rejects a bad token with BAD_TOKEN and a malformed repository name", async () => {
    expect(await codeOf(client({ token: "wrong" }).listReleases(REPO))).toBe("BAD_TOKEN");
    expect(await codeOf(client().listReleases("not a repo"))).toBe("INVALID_ARGUMENT");
  });

  it("retries a failing API call", async () => {
    fake.fault("/releases/tags/", { kind: "status", status: 502 }, { kind: "drop", afterBytes: 10 });
    expect((await client().releaseByTag(REPO, "emulator-v1")).tag).toBe("emulator-v1");
    expect(messages.some((m) => m.includes("answered 502") && m.includes("retrying"))).toBe(true);
    expect(messages.filter((m) => m.includes("retrying")).length).toBeGreaterThanOrEqual(2);
  });

  it("stops at the rate-limit cap with advice to set a token", async () => {
    const reset = Math.floor(Date.now() / 1000) + 1800;
    fake.fault("/releases", {
      kind: "status",
      status: 403,
      headers: { "x-ratelimit-remaining": "0", "x-ratelimit-reset": String(reset) },
      body: JSON.stringify({ message: "API rate limit exceeded" }),
    });
    const err = await client({ token: null })
      .listReleases(REPO)
      .catch((e: unknown) => e);
    expect((err as ArtifactsError).code).toBe("RATE_LIMITED");
    expect((err as Error).message).toMatch(/GH_TOKEN/);
  });
});

describe("token discovery", () => {
  let bin: string;

  beforeEach(async () => {
    bin = await mkdtemp(join(tmpdir(), "artifacts-gh-"));
  });

  afterEach(async () => {
    await rm(bin, { recursive: true, force: true });
  });

  it("prefers GH_TOKEN, then GITHUB_TOKEN", async () => {
    expect(await discoverToken(fake.apiUrl, { GH_TOKEN: "one", GITHUB_TOKEN: "two" })).toBe("one");
    expect(await discoverToken(fake.apiUrl, { GITHUB_TOKEN: "two" })).toBe("two");
  });

  it("falls back to `gh auth token`, run once", async () => {
    const calls = join(bin, "calls");
    await writeFile(join(bin, "gh"), `#!/bin/sh\necho "$@" >> '${calls}'\necho ${TOKEN}\n`);
    await chmod(join(bin, "gh"), 0o755);
    const env = { PATH: `${bin}:/usr/bin:/bin` };
    const c = new GitHubClient({ apiUrl: fake.apiUrl, env });
    await c.listReleases(REPO);
    await new GitHubClient({ apiUrl: fake.apiUrl, env }).listReleases(REPO);
    expect(fake.requests.every((r) => r.headers.authorization === `Bearer ${TOKEN}`)).toBe(true);
    const lines = (await readFile(calls, "utf8")).trim().split("\n");
    expect(lines).toEqual([`auth token --hostname ${new URL(fake.apiUrl).host}`]);
  });

  it("carries on without a token when gh is missing", async () => {
    expect(await discoverToken(fake.apiUrl, { PATH: bin })).toBeUndefined();
  });
});

describe("pull request artifacts", () => {
  it("follows the head SHA, not the newest run, to a successful run's artifact", async () => {
    fake.addPull(REPO, 7, { sha: SHA });
    fake.addRun(REPO, { id: 1, headSha: SHA, artifacts: [{ name: "image-amd64", content: zip }] });
    fake.addRun(REPO, {
      id: 2,
      headSha: SHA,
      conclusion: "failure",
      artifacts: [{ name: "image-amd64", content: zip }],
    });
    // Newer and successful, but for another commit (a same-named branch elsewhere).
    fake.addRun(REPO, { id: 3, headSha: OTHER_SHA, artifacts: [{ name: "image-amd64", content: zip }] });
    const ref = await client().pullRequestArtifact(REPO, 7, {
      workflow: "ci.yml",
      artifactName: "image-amd64",
    });
    expect(ref).toMatchObject({
      runId: 1,
      headSha: SHA,
      name: "image-amd64",
      sha256: sha256(zip),
      expired: false,
    });
    expect(ref.archiveDownloadUrl).toMatch(/\/actions\/artifacts\/\d+\/zip$/);
    const runsQuery = fake.requests.find((r) => r.url.includes("/workflows/ci.yml/runs"))!;
    expect(runsQuery.url).toContain(`head_sha=${SHA}`);
    expect(runsQuery.url).toContain("status=success");
  });

  it("notes a fork, skips expired artifacts with a message and pages through artifacts", async () => {
    fake.addPull(REPO, 8, { sha: SHA, repo: "someone/images" });
    fake.addRun(REPO, {
      id: 10,
      headSha: SHA,
      headRepo: "someone/images",
      artifacts: ["a", "b", "c", "d"]
        .map((n) => ({ name: n, content: zip }))
        .concat({ name: "image", content: zip }),
    });
    fake.addRun(REPO, {
      id: 11,
      headSha: SHA,
      headRepo: "someone/images",
      artifacts: [{ name: "image", content: zip, expired: true }],
    });
    const ref = await client().pullRequestArtifact(REPO, 8, { artifactName: /^image$/ });
    expect(ref.runId).toBe(10);
    expect(messages.some((m) => m.includes("fork someone/images"))).toBe(true);
    expect(
      messages.some((m) => m.includes("Skipping artifact image of run 11") && m.includes("expired")),
    ).toBe(true);
    expect(fake.requests.filter((r) => r.url.includes("/runs/10/artifacts")).length).toBe(3);
  });

  it("explains each dead end: no run, only expired, no such artifact, unknown PR", async () => {
    fake.addPull(REPO, 1, { sha: SHA });
    fake.addRun(REPO, { id: 20, headSha: SHA, conclusion: "failure" });
    expect(await codeOf(client().pullRequestArtifact(REPO, 1, { artifactName: "image" }))).toBe(
      "NO_SUCCESSFUL_RUN",
    );

    fake.addPull(REPO, 2, { sha: OTHER_SHA });
    fake.addRun(REPO, {
      id: 21,
      headSha: OTHER_SHA,
      artifacts: [{ name: "image", content: zip, expired: true }],
    });
    const expired = await client()
      .pullRequestArtifact(REPO, 2, { artifactName: "image" })
      .catch((e: unknown) => e);
    expect((expired as ArtifactsError).code).toBe("ARTIFACT_EXPIRED");
    expect((expired as Error).message).toMatch(/Re-run the workflow/);

    const missing = await client()
      .pullRequestArtifact(REPO, 2, { artifactName: "other" })
      .catch((e: unknown) => e);
    expect((missing as ArtifactsError).code).toBe("NO_ARTIFACT");
    expect((missing as Error).message).toContain("available: image");

    expect(await codeOf(client().pullRequestArtifact(REPO, 99, { artifactName: "image" }))).toBe("NOT_FOUND");
  });

  it("finds an artifact by run id", async () => {
    fake.addRun(REPO, { id: 30, headSha: SHA, artifacts: [{ name: "image", content: zip, digest: "none" }] });
    const ref = await client().runArtifact(REPO, 30, { artifactName: "image" });
    expect(ref).toMatchObject({ runId: 30, headSha: SHA, sizeInBytes: zip.length });
    expect(ref.sha256).toBeUndefined();
    expect(await codeOf(client().runArtifact(REPO, 31, { artifactName: "image" }))).toBe("NOT_FOUND");
  });

  it("requires a token to download artifact zips", async () => {
    await expect(client({ token: null }).downloadHeaders("Downloading the artifact")).rejects.toMatchObject({
      code: "MISSING_TOKEN",
    });
  });
});
