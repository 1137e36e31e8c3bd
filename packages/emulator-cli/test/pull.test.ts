import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { compress } from "zstd-napi";
import { FakeGitHub, makeZip, sha256 } from "../../artifacts/test/fake-github.js";
import { releaseManifest } from "../src/pull.js";
import { GUEST, instanceFiles, removeTempHomes, runCli, tempHome } from "./helpers.js";

const REPO = "stack-auth/stack-auth";
const TOKEN = "ghp_test_token_for_the_fake";
const disk = randomBytes(3 * 1024 * 1024 + 17);
let fake: FakeGitHub;

beforeAll(async () => {
  fake = await FakeGitHub.start({ token: TOKEN });
  fake.addRelease(REPO, {
    tag: "emulator-main-latest",
    assets: [{ name: "stack-emulator-amd64.qcow2", content: disk }],
  });
  fake.addRelease(REPO, {
    tag: "emulator-broken",
    assets: [{ name: "stack-emulator-amd64.qcow2", content: disk, digest: `sha256:${"0".repeat(64)}` }],
  });
  fake.addRelease(REPO, {
    tag: "emulator-compressed",
    assets: [
      {
        name: "stack-emulator-amd64.qcow2",
        content: Buffer.from("the uncompressed twin must not be chosen"),
      },
      { name: "stack-emulator-amd64.qcow2.zst", content: compress(disk) },
    ],
  });
  fake.addRelease(REPO, { tag: "v1.0.0" });
  fake.addPull(REPO, 42, { sha: "abc123def4567890abc123def4567890abc12345" });
  fake.addRun(REPO, {
    id: 777,
    headSha: "abc123def4567890abc123def4567890abc12345",
    artifacts: [
      {
        name: "stack-emulator-amd64",
        content: makeZip([{ name: "stack-emulator-amd64.qcow2", data: disk }]),
      },
    ],
  });
});

afterAll(async () => {
  await fake.close();
  removeTempHomes();
});

function envFor(home: string): NodeJS.ProcessEnv {
  return { ...process.env, STACK_EMULATOR_HOME: home, GITHUB_API_URL: fake.apiUrl, GH_TOKEN: TOKEN, CI: "1" };
}

function imageDirs(home: string): string[] {
  return readdirSync(join(home, "images"), { withFileTypes: true })
    .filter((e) => e.isDirectory() && !e.name.startsWith("."))
    .map((e) => e.name);
}

describe("the published image's manifest", () => {
  it("is the one guest/build-image writes, but for the name this CLI stores it under and the digest", () => {
    for (const arch of ["amd64", "arm64"] as const) {
      const out = execFileSync(join(GUEST, "build-image"), ["--dry-run", "--arch", arch], {
        encoding: "utf8",
      });
      const published = JSON.parse(out.slice(out.indexOf("\n\n") + 2));
      const ours = releaseManifest("release-x", arch, "sha256:ab");
      expect({ ...ours, name: published.name, digest: published.digest }).toEqual(published);
    }
  });
});

describe("pull from a stand-in of the GitHub API and object storage", () => {
  it("downloads a release image, verifies it against the published digest and stores it with a manifest", async () => {
    const home = tempHome();
    const result = await runCli(
      ["pull", "--tag", "emulator-main-latest", "--skip-snapshot", "--json"],
      envFor(home),
    );
    expect(result.code, result.stderr).toBe(0);
    expect(result.json.captured).toBe(false);
    const dir = join(home, "images", "release-emulator-main-latest-amd64");
    expect(readFileSync(join(dir, "stack-emulator-amd64.qcow2")).equals(disk)).toBe(true);
    const manifest = JSON.parse(readFileSync(join(dir, "image.json"), "utf8"));
    expect(manifest.digest).toBe(`sha256:${sha256(disk)}`);
    expect(manifest.services.map((s: { name: string }) => s.name)).toContain("backend");
    expect(readdirSync(join(home, "images", ".downloads"))).toEqual([]);
    // The token went to the API only, never to the storage origin behind the redirect.
    expect(fake.requests.some((r) => r.server === "storage")).toBe(true);
    expect(fake.requests.filter((r) => r.server === "storage" && r.headers.authorization)).toEqual([]);
  });

  it("prefers the compressed asset and stores it decompressed, verified against the published bytes", async () => {
    const home = tempHome();
    const result = await runCli(
      ["pull", "--tag", "emulator-compressed", "--skip-snapshot", "--json"],
      envFor(home),
    );
    expect(result.code, result.stderr).toBe(0);
    const dir = join(home, "images", "release-emulator-compressed-amd64");
    expect(readFileSync(join(dir, "stack-emulator-amd64.qcow2")).equals(disk)).toBe(true);
    expect(JSON.parse(readFileSync(join(dir, "image.json"), "utf8")).digest).toBe(
      `sha256:${sha256(compress(disk))}`,
    );
  });

  it("pulls a pull request's CI build by head SHA, extracting the zip and removing it", async () => {
    const home = tempHome();
    const result = await runCli(["pull", "--pr", "42", "--skip-snapshot", "--json"], envFor(home));
    expect(result.code, result.stderr).toBe(0);
    const dir = join(home, "images", "pr-42-amd64");
    expect(readFileSync(join(dir, "stack-emulator-amd64.qcow2")).equals(disk)).toBe(true);
    expect(imageDirs(home)).toEqual(["pr-42-amd64"]);
    // Runs were looked up by the pull request's head commit, not by branch name.
    expect(
      fake.requests.some((r) => r.url.includes("head_sha=abc123def4567890abc123def4567890abc12345")),
    ).toBe(true);
  });

  it("refuses a download whose digest does not match, leaving no image behind", async () => {
    const home = tempHome();
    const result = await runCli(
      ["pull", "--tag", "emulator-broken", "--skip-snapshot", "--json"],
      envFor(home),
    );
    expect(result.code).toBe(1);
    expect(result.json.error.code).toBe("CHECKSUM_MISMATCH");
    expect(imageDirs(home)).toEqual([]);
    expect(existsSync(join(home, "images", ".downloads", "release-emulator-broken-amd64.qcow2"))).toBe(false);
  });

  it("lists only emulator releases", async () => {
    const result = await runCli(["list-releases", "--json"], envFor(tempHome()));
    expect(result.code, result.stderr).toBe(0);
    expect(result.json.map((r: { tag: string }) => r.tag).sort()).toEqual([
      "emulator-broken",
      "emulator-compressed",
      "emulator-main-latest",
    ]);
  });

  it("rejects conflicting and malformed selectors", async () => {
    const env = envFor(tempHome());
    const both = await runCli(["pull", "--pr", "1", "--run", "2", "--json"], env);
    expect(both.json.error.code).toBe("INVALID_ARGUMENT");
    const bad = await runCli(["pull", "--pr", "twelve", "--json"], env);
    expect(bad.json.error.code).toBe("INVALID_ARGUMENT");
  });

  it("offers the dev image when no image is present and none can be downloaded", async () => {
    const home = tempHome();
    const result = await runCli(["start", "--json"], {
      ...envFor(home),
      GITHUB_API_URL: "http://127.0.0.1:9",
    });
    expect(result.code).toBe(1);
    expect(result.json.error.code).toBe("NO_IMAGE");
    expect(result.json.error.hint).toContain("--image dev");
    expect(existsSync(instanceFiles(home).state)).toBe(false);
  });
});
