import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FakeGitHub, makeZip } from "../../artifacts/test/fake-github.js";
import { PUBLISHABLE_KEY_NAME as PCK } from "../src/contract/contract.js";
import {
  apiStatus,
  GUEST,
  type Instance,
  instanceFiles,
  keysOf,
  newInstance,
  placeholderPublishableKey,
  removeTempHomes,
  runCli,
} from "./helpers.js";

/**
 * The path a real release takes, end to end: a disk-booting variant of the dev image (a bare qcow2 with SYSLINUX, no
 * manifest, as the original's CI publishes stack-emulator-<arch>.qcow2), published by a stand-in GitHub the
 * original's way, pulled with no flags and with --pr, booted through the firmware to healthy and rotated.
 */
const TIMEOUT = 900_000;
const REPO = "stack-auth/stack-auth";
const TOKEN = "ghp_release_test_token";
const SHA = "0123456789abcdef0123456789abcdef01234567";
let fake: FakeGitHub;
let disk: Buffer;
const started: Instance[] = [];

beforeAll(async () => {
  const out = join(tmpdir(), "stack-emulator-test-images", "dev-disk");
  const built = execFileSync(join(GUEST, "build-dev-image"), ["--disk-boot", "--out", out, "--json"], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
  });
  const dir = JSON.parse(built.trim().split("\n").pop() as string).path as string;
  disk = readFileSync(join(dir, "stack-emulator-amd64.qcow2"));
  fake = await FakeGitHub.start({ token: TOKEN });
  fake.addRelease(REPO, {
    tag: "emulator-dev-latest",
    prerelease: true,
    assets: [
      { name: "stack-emulator-amd64.qcow2", content: disk, digest: "none" },
      { name: "SHA256SUMS", content: readFileSync(join(dir, "SHA256SUMS")) },
    ],
  });
  fake.addPull(REPO, 42, { sha: SHA });
  fake.addRun(REPO, {
    id: 4242,
    headSha: SHA,
    workflow: "qemu-emulator-build.yaml",
    artifacts: [
      { name: "qemu-emulator-amd64", content: makeZip([{ name: "stack-emulator-amd64.qcow2", data: disk }]) },
    ],
  });
}, 600_000);

afterAll(async () => {
  for (const inst of started) await runCli(["stop", "--no-save"], inst.env);
  await fake?.close();
  removeTempHomes();
});

async function instance(): Promise<Instance> {
  const inst = await newInstance({ GITHUB_API_URL: fake.apiUrl, GH_TOKEN: TOKEN });
  started.push(inst);
  return inst;
}

describe("a release published the original's way", () => {
  it(
    "start with no flags pulls emulator-dev-latest, boots it through the firmware, captures, resumes and rotates",
    async () => {
      const inst = await instance();
      const first = await runCli(["start", "--json"], inst.env);
      expect(first.code, first.stderr).toBe(0);
      expect(first.json).toMatchObject({
        image: { selector: "release", name: "release-emulator-dev-latest-amd64" },
        boot: "snapshot",
        rotation: "rotated",
      });
      // The start pulled first, and says what that took.
      expect(first.json.download.files).toEqual([
        expect.objectContaining({
          name: "stack-emulator-amd64.qcow2",
          bytes: disk.length,
          fetchedBytes: disk.length,
          resumedBytes: 0,
          verified: "checksums",
        }),
      ]);
      // Verified against the release's SHA256SUMS (its asset carries no digest), booted as a release is.
      const manifest = JSON.parse(readFileSync(join(first.json.image.dir, "image.json"), "utf8"));
      expect(manifest).toMatchObject({ boot: { firmware: "bios" }, memoryMiB: 4096, cpus: 4 });
      const keys = keysOf(inst);
      expect(await apiStatus(inst, keys[PCK] as string)).toBe(200);
      expect(await apiStatus(inst, placeholderPublishableKey())).toBe(401);
      expect(readFileSync(instanceFiles(inst.home).internalPck, "utf8")).toBe(keys[PCK]);

      const status = await runCli(["status", "--json"], inst.env);
      expect(status.code).toBe(0);
      expect(status.json.services.every((s: { healthy: boolean }) => s.healthy)).toBe(true);

      expect((await runCli(["stop", "--json"], inst.env)).json.saved).toBe(true);
      const again = await runCli(["start", "--json"], inst.env);
      expect(again.code, again.stderr).toBe(0);
      expect(again.json.boot).toBe("quick-boot");
      expect(again.json.download).toBeUndefined();
      expect(keysOf(inst)).toEqual(keys);
      await runCli(["stop", "--no-save"], inst.env);
    },
    TIMEOUT,
  );

  it(
    "start --pr pulls the pull request's qemu-emulator-amd64 artifact and boots it, with fresh keys",
    async () => {
      const inst = await instance();
      const result = await runCli(["start", "--pr", "42", "--skip-snapshot", "--json"], inst.env);
      expect(result.code, result.stderr).toBe(0);
      expect(result.json).toMatchObject({
        image: { selector: "pr:42", name: "pr-42-amd64" },
        boot: "cold",
        rotation: "rotated",
        download: {
          files: [expect.objectContaining({ name: "qemu-emulator-amd64.zip", verified: "digest" })],
        },
      });
      expect(await apiStatus(inst, keysOf(inst)[PCK] as string)).toBe(200);
      expect(await apiStatus(inst, placeholderPublishableKey())).toBe(401);
    },
    TIMEOUT,
  );
});
