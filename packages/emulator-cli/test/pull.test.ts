import { randomBytes } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { compress } from "zstd-napi";
import { FakeGitHub, type FakeReleaseSpec, makeZip, sha256 } from "../../artifacts/test/fake-github.js";
import { releaseManifest } from "../src/image/pull.js";
import { instanceFiles, removeTempHomes, runCli, startCli, tempHome } from "./helpers.js";

const REPO = "stack-auth/stack-auth";
const TOKEN = "ghp_test_token_for_the_fake";
const SHA = "abc123def4567890abc123def4567890abc12345";
const disk = randomBytes(3 * 1024 * 1024 + 17);
const olderDisk = randomBytes(2 * 1024 * 1024 + 5);
let fake: FakeGitHub;
/** Published as the original's workflow does: every emulator release a prerelease, -latest updated in place. */
const devLatest: FakeReleaseSpec = {
  tag: "emulator-dev-latest",
  prerelease: true,
  assets: [{ name: "stack-emulator-amd64.qcow2", content: disk }],
};

beforeAll(async () => {
  fake = await FakeGitHub.start({ token: TOKEN });
  fake.addRelease(REPO, {
    tag: "emulator-dev-20261101-0badcafe",
    prerelease: true,
    createdAt: "2026-11-01T00:00:00Z",
    assets: [{ name: "stack-emulator-amd64.qcow2", content: randomBytes(1024) }],
  });
  fake.addRelease(REPO, {
    tag: "emulator-dev-20261201-abc123de",
    prerelease: true,
    createdAt: "2026-12-01T00:00:00Z",
    assets: [{ name: "stack-emulator-amd64.qcow2", content: olderDisk }],
  });
  fake.addRelease(REPO, devLatest);
  fake.addRelease(REPO, {
    tag: "emulator-main-latest",
    prerelease: true,
    assets: [{ name: "stack-emulator-amd64.qcow2", content: olderDisk }],
  });
  fake.addRelease(REPO, {
    tag: "emulator-broken",
    prerelease: true,
    assets: [{ name: "stack-emulator-amd64.qcow2", content: disk, digest: `sha256:${"0".repeat(64)}` }],
  });
  fake.addRelease(REPO, {
    tag: "emulator-compressed",
    prerelease: true,
    assets: [
      {
        name: "stack-emulator-amd64.qcow2",
        content: Buffer.from("the uncompressed twin must not be chosen"),
      },
      { name: "stack-emulator-amd64.qcow2.zst", content: compress(disk) },
    ],
  });
  // The repository's "latest" release is not an emulator build: /releases/latest must not be what pull uses.
  fake.addRelease(REPO, { tag: "v1.0.0", latest: true });
  fake.addPull(REPO, 42, { sha: SHA });
  // The same commit built by another workflow with an artifact of the same name: not the emulator build.
  fake.addRun(REPO, {
    id: 776,
    headSha: SHA,
    workflow: "ci.yml",
    artifacts: [
      {
        name: "qemu-emulator-amd64",
        content: makeZip([{ name: "stack-emulator-amd64.qcow2", data: randomBytes(100) }]),
      },
    ],
  });
  fake.addRun(REPO, {
    id: 777,
    headSha: SHA,
    workflow: "qemu-emulator-build.yaml",
    createdAt: "2026-11-30T00:00:00Z",
    artifacts: [
      {
        name: "qemu-emulator-amd64",
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
  it("boots the bare qcow2 through firmware with the original's 4096 MiB and 4 vCPUs", () => {
    expect(releaseManifest("release-x", "amd64", "sha256:ab")).toEqual({
      schema: 2,
      name: "release-x",
      arch: "amd64",
      digest: "sha256:ab",
      boot: { firmware: "bios" },
      disk: "stack-emulator-amd64.qcow2",
      memoryMiB: 4096,
      cpus: 4,
    });
    expect(releaseManifest("release-x", "arm64", "sha256:ab").boot).toEqual({ firmware: "uefi" });
  });
});

describe("pull from a stand-in of the GitHub API and object storage", () => {
  it("pulls emulator-dev-latest with no flags, a prerelease, verified and stored with a manifest", async () => {
    const home = tempHome();
    const result = await runCli(["pull", "--skip-snapshot", "--json"], envFor(home));
    expect(result.code, result.stderr).toBe(0);
    expect(result.json.captured).toBe(false);
    expect(result.json.download).toEqual({
      files: [
        {
          name: "stack-emulator-amd64.qcow2",
          bytes: disk.length,
          fetchedBytes: disk.length,
          resumedBytes: 0,
          seconds: expect.any(Number),
          connections: expect.any(Number),
          verified: "digest",
        },
      ],
    });
    const dir = join(home, "images", "release-emulator-dev-latest-amd64");
    expect(readFileSync(join(dir, "stack-emulator-amd64.qcow2")).equals(disk)).toBe(true);
    const manifest = JSON.parse(readFileSync(join(dir, "image.json"), "utf8"));
    expect(manifest).toMatchObject({ digest: `sha256:${sha256(disk)}`, boot: { firmware: "bios" } });
    expect(fake.requests.some((r) => r.url.endsWith("/releases/tags/emulator-dev-latest"))).toBe(true);
    expect(readdirSync(join(home, "images", ".downloads"))).toEqual([]);
    // The token went to the API only, never to the storage origin behind the redirect.
    expect(fake.requests.some((r) => r.server === "storage")).toBe(true);
    expect(fake.requests.filter((r) => r.server === "storage" && r.headers.authorization)).toEqual([]);
  });

  it("--branch takes that branch's -latest release", async () => {
    const home = tempHome();
    const result = await runCli(["pull", "--branch", "main", "--skip-snapshot", "--json"], envFor(home));
    expect(result.code, result.stderr).toBe(0);
    const dir = join(home, "images", "release-emulator-main-latest-amd64");
    expect(readFileSync(join(dir, "stack-emulator-amd64.qcow2")).equals(olderDisk)).toBe(true);
  });

  it("waits while -latest is re-uploaded (a draft), then takes the newest dated release of its branch", async () => {
    const home = tempHome();
    devLatest.draft = true;
    try {
      const result = await runCli(["pull", "--skip-snapshot", "--json"], {
        ...envFor(home),
        STACK_EMULATOR_RELEASE_WAIT: "1",
      });
      expect(result.code, result.stderr).toBe(0);
      expect(result.stderr).toMatch(/emulator-dev-latest is not published right now.*trying again/);
      expect(result.stderr).toContain("using the newest build of dev, emulator-dev-20261201-abc123de");
      const dir = join(home, "images", "release-emulator-dev-latest-amd64");
      expect(readFileSync(join(dir, "stack-emulator-amd64.qcow2")).equals(olderDisk)).toBe(true);
    } finally {
      devLatest.draft = false;
    }
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

  it("pulls a pull request's qemu-emulator-<arch> artifact of qemu-emulator-build.yaml, found by head SHA", async () => {
    const home = tempHome();
    const result = await runCli(["pull", "--pr", "42", "--skip-snapshot", "--json"], envFor(home));
    expect(result.code, result.stderr).toBe(0);
    expect(result.json.download.files).toMatchObject([
      { name: "qemu-emulator-amd64.zip", resumedBytes: 0, verified: "digest" },
    ]);
    const dir = join(home, "images", "pr-42-amd64");
    expect(readFileSync(join(dir, "stack-emulator-amd64.qcow2")).equals(disk)).toBe(true);
    expect(imageDirs(home)).toEqual(["pr-42-amd64"]);
    // Runs were looked up by the pull request's head commit, not by branch name, in the emulator's workflow.
    expect(
      fake.requests.some((r) =>
        r.url.includes(`/actions/workflows/qemu-emulator-build.yaml/runs?head_sha=${SHA}`),
      ),
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
      "emulator-dev-20261101-0badcafe",
      "emulator-dev-20261201-abc123de",
      "emulator-dev-latest",
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

describe("pull from storage that caps each connection", () => {
  const MiB = 1024 * 1024;
  const capped = randomBytes(24 * MiB);
  const cappedZst = compress(capped);
  let slow: FakeGitHub;
  const env = (home: string) => ({ ...envFor(home), GITHUB_API_URL: slow.apiUrl });

  beforeAll(async () => {
    // 2 MiB/s per connection: one connection would take 12 s, eight about 1.5.
    slow = await FakeGitHub.start({ token: TOKEN, bytesPerSecond: 2 * MiB });
    slow.addRelease(REPO, {
      tag: "emulator-capped",
      prerelease: true,
      assets: [{ name: "stack-emulator-amd64.qcow2", content: capped }],
    });
    slow.addRelease(REPO, {
      tag: "emulator-capped-zst",
      prerelease: true,
      assets: [{ name: "stack-emulator-amd64.qcow2.zst", content: cappedZst }],
    });
  });

  afterAll(async () => {
    await slow.close();
  });

  it("reports in --json that it used several connections", async () => {
    const home = tempHome();
    const result = await runCli(["pull", "--tag", "emulator-capped", "--skip-snapshot", "--json"], env(home));
    expect(result.code, result.stderr).toBe(0);
    const [file] = result.json.download.files;
    expect(file).toMatchObject({ name: "stack-emulator-amd64.qcow2", bytes: capped.length, resumedBytes: 0 });
    expect(file.connections).toBeGreaterThan(1);
    expect(file.fetchedBytes).toBe(capped.length);
    // Faster than one capped connection could be: several carried the bytes.
    expect(file.seconds).toBeLessThan(capped.length / (2 * MiB));
    const stored = join(home, "images", "release-emulator-capped-amd64", "stack-emulator-amd64.qcow2");
    expect(readFileSync(stored).equals(capped)).toBe(true);
  });

  it("resumes after the CLI is killed with SIGKILL mid-download, and the image verifies", async () => {
    const home = tempHome();
    const args = ["pull", "--tag", "emulator-capped-zst", "--skip-snapshot", "--json"];
    const state = join(home, "images", ".downloads", "release-emulator-capped-zst-amd64.qcow2.part.json");
    const first = startCli(args, env(home));
    // Killed once the state file records a quarter of the file as written: mid-download, ranges to keep.
    const recorded = () => {
      try {
        const done: [number, number][] = JSON.parse(readFileSync(state, "utf8")).done;
        return done.reduce((sum, [s, e]) => sum + e - s, 0);
      } catch {
        return 0;
      }
    };
    const killer = setInterval(() => {
      if (recorded() >= cappedZst.length / 4) first.child.kill("SIGKILL");
    }, 10);
    const killed = await first.result.finally(() => clearInterval(killer));
    expect(killed.code, killed.stderr).toBe(-1);
    expect(first.child.signalCode).toBe("SIGKILL");
    const kept = recorded();
    expect(kept).toBeLessThan(cappedZst.length);

    const again = await runCli(args, env(home));
    expect(again.code, again.stderr).toBe(0);
    const [file] = again.json.download.files;
    expect(file.resumedBytes).toBeGreaterThanOrEqual(kept);
    expect(file.resumedBytes + file.fetchedBytes).toBe(cappedZst.length);
    expect(file.verified).toBe("digest");
    const dir = join(home, "images", "release-emulator-capped-zst-amd64");
    expect(readFileSync(join(dir, "stack-emulator-amd64.qcow2")).equals(capped)).toBe(true);
    expect(JSON.parse(readFileSync(join(dir, "image.json"), "utf8")).digest).toBe(
      `sha256:${sha256(cappedZst)}`,
    );
    expect(readdirSync(join(home, "images", ".downloads"))).toEqual([]);
  });
});

describe("free space, checked before the first byte of a download", () => {
  const MiB = 1024 * 1024;
  const PR_SHA = "0123456789abcdef0123456789abcdef01234567";

  beforeAll(() => {
    fake.addRelease(REPO, {
      tag: "emulator-big",
      prerelease: true,
      assets: [{ name: "stack-emulator-amd64.qcow2", content: randomBytes(5 * MiB) }],
    });
    // The release also publishes the uncompressed disk: its size is what the .zst unpacks to.
    fake.addRelease(REPO, {
      tag: "emulator-big-unpacked",
      prerelease: true,
      assets: [
        { name: "stack-emulator-amd64.qcow2", content: Buffer.alloc(8 * MiB) },
        { name: "stack-emulator-amd64.qcow2.zst", content: compress(randomBytes(MiB)) },
      ],
    });
    fake.addRelease(REPO, {
      tag: "emulator-zst-only",
      prerelease: true,
      assets: [{ name: "stack-emulator-amd64.qcow2.zst", content: compress(randomBytes(2.5 * MiB)) }],
    });
    fake.addPull(REPO, 43, { sha: PR_SHA });
    fake.addRun(REPO, {
      id: 900,
      headSha: PR_SHA,
      workflow: "qemu-emulator-build.yaml",
      artifacts: [
        {
          name: "qemu-emulator-amd64",
          content: makeZip([{ name: "stack-emulator-amd64.qcow2", data: randomBytes(2.5 * MiB) }]),
        },
      ],
    });
  });

  // The home is a 4 MiB file system. Each download alone would fit in it except the first; with what it unpacks
  // into (stated by the release, else assumed at least as large as the download), none does.
  it.each([
    ["a release asset", ["--tag", "emulator-big"], "5.00 MiB needed,"],
    [
      "a .zst whose release states the unpacked size",
      ["--tag", "emulator-big-unpacked"],
      "9.00 MiB needed (1.00 MiB to download + 8.00 MiB unpacked)",
    ],
    [
      "a .zst, the unpacked size assumed",
      ["--tag", "emulator-zst-only"],
      "unpacked, assumed at least the download's size)",
    ],
    ["an artifact zip", ["--pr", "43"], "unpacked, assumed at least the download's size)"],
  ])(
    "refuses %s on a disk too small, naming the directory and the space needed",
    async (_, flags, needed) => {
      const home = tempHome();
      const mark = fake.requests.length;
      const result = await runCli(["pull", ...flags, "--skip-snapshot", "--json"], envFor(home), {
        smallHome: true,
      });
      expect(result.code, result.stderr).toBe(1);
      expect(result.json.error.code).toBe("NO_SPACE");
      expect(result.json.error.message).toMatch(
        new RegExp(`^Not enough free space in ${join(home, "images", ".downloads")}\\S*: `),
      );
      expect(result.json.error.message).toContain(needed);
      const downloads = fake.requests
        .slice(mark)
        .filter((r) => r.server === "storage" || /\/releases\/assets\/|\/zip$/.test(r.url));
      expect(downloads).toEqual([]);
    },
  );
});
