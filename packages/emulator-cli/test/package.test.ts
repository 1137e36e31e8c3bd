// The CLI as users get it: packed as `pnpm publish` packs it (scripts/release/pack-cli), installed with
// `npm install -g` into a scratch prefix (scripts/release/install-cli) and run from there, with no workspace around
// it. The install skips zstd-napi's build, as on a machine where its addon cannot compile; everything but zstd
// streams must work without it.

import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { createRequire } from "node:module";
import { homedir, tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { compress } from "zstd-napi";
import { FakeGitHub } from "../../artifacts/test/fake-github.js";
import { removeTempHomes, runCli, tempHome } from "./helpers.js";

const root = resolve(import.meta.dirname, "..", "..", "..");
const cliDir = resolve(import.meta.dirname, "..");
const work = mkdtempSync(join(tmpdir(), "cli-package-"));
const prefix = join(work, "prefix");
const installed = join(prefix, "lib", "node_modules", "emulator-cli");
const bin = join(prefix, "bin", "stack-emulator");
const { version } = JSON.parse(readFileSync(join(cliDir, "package.json"), "utf8")) as { version: string };
let tarball: string;

const REPO = "stack-auth/stack-auth";
const TOKEN = "ghp_test_token_for_the_fake";
const disk = randomBytes(256 * 1024 + 3);
let fake: FakeGitHub;

function filesBelow(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => relative(dir, join(e.parentPath, e.name)));
}

beforeAll(async () => {
  tarball = execFileSync(join(root, "scripts", "release", "pack-cli"), [work], { encoding: "utf8" }).trim();
  execFileSync(join(root, "scripts", "release", "install-cli"), [tarball, prefix, "--ignore-scripts"], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  fake = await FakeGitHub.start({ token: TOKEN });
  fake.addRelease(REPO, {
    tag: "emulator-both",
    prerelease: true,
    assets: [
      { name: "stack-emulator-amd64.qcow2", content: disk },
      { name: "stack-emulator-amd64.qcow2.zst", content: compress(disk) },
    ],
  });
  fake.addRelease(REPO, {
    tag: "emulator-zst-only",
    prerelease: true,
    assets: [{ name: "stack-emulator-amd64.qcow2.zst", content: compress(disk) }],
  });
}, 300_000);

afterAll(async () => {
  await fake?.close();
  removeTempHomes();
  rmSync(work, { recursive: true, force: true });
});

describe("the packed CLI", () => {
  it("holds the bundle, its assets, the dev image's builder with its inputs, and nothing else", () => {
    const packed = execFileSync("tar", ["-tzf", tarball], { encoding: "utf8" })
      .trim()
      .split("\n")
      .map((entry) => entry.replace(/^package\//, ""))
      .sort();
    const expected = [
      "package.json",
      "README.md",
      "CHANGELOG.md",
      "LICENSE",
      ...filesBelow(join(cliDir, "dist")).map((f) => `dist/${f}`),
      ...filesBelow(join(cliDir, "assets")).map((f) => `assets/${f}`),
      "guest/build-dev-image",
      ...filesBelow(join(root, "guest", "dev")).map((f) => `guest/dev/${f}`),
    ].sort();
    expect(packed).toEqual(expected);
    // One bin and its chunks; no source maps or declarations that would name files the package does not have.
    expect(
      packed.filter((f) => f.startsWith("dist/")).every((f) => /^dist\/stack-emulator(-\w+)?\.js$/.test(f)),
    ).toBe(true);
  });

  it("asks a registry for nothing but the optional zstd-napi, and carries no build scripts", () => {
    const manifest = JSON.parse(
      execFileSync("tar", ["-xzOf", tarball, "package/package.json"], { encoding: "utf8" }),
    );
    expect(manifest).toMatchObject({
      name: "emulator-cli",
      version,
      bin: { "stack-emulator": "./dist/stack-emulator.js" },
    });
    expect(manifest.dependencies).toBeUndefined();
    expect(manifest.devDependencies).toBeUndefined();
    expect(manifest.scripts).toBeUndefined();
    expect(Object.keys(manifest.optionalDependencies)).toEqual(["zstd-napi"]);
  });

  it("keeps the builder and the guest's scripts executable (publishConfig.executableFiles lists them)", () => {
    const mode = (file: string) => (statSync(file).mode & 0o111) !== 0;
    const files = ["build-dev-image", ...filesBelow(join(root, "guest", "dev")).map((f) => `dev/${f}`)];
    expect(files.filter((f) => mode(join(installed, "guest", f))).sort()).toEqual(
      files.filter((f) => mode(join(root, "guest", f))).sort(),
    );
  });
});

describe("stack-emulator installed with npm install -g", () => {
  const env = () => ({ ...process.env, STACK_EMULATOR_HOME: tempHome() });

  it("prints the package's version, as text and as JSON", async () => {
    const text = await runCli(["--version"], env(), { bin });
    expect(text.stdout).toBe(`${version}\n`);
    expect(text.code).toBe(0);
    const json = await runCli(["--version", "--json"], env(), { bin });
    expect(json.json).toEqual({ version });
    expect(json.code).toBe(0);
  });

  it("lists its commands in --help", async () => {
    const help = await runCli(["--help"], env(), { bin });
    expect(help.code).toBe(0);
    for (const command of ["start", "stop", "status", "run", "env", "doctor", "pull", "list-releases"])
      expect(help.stdout).toMatch(new RegExp(`^  ${command}\\b`, "m"));
  });

  it("reports the host as data in doctor --json", async () => {
    const doctor = await runCli(["doctor", "--json"], env(), { bin });
    expect(doctor.json.checks.length).toBeGreaterThan(0);
    expect(doctor.code).toBe(doctor.json.ok ? 0 : 1);
  });

  it("runs the dev image's builder it ships, not the repository's", async () => {
    // A dpkg that fails stops the builder at its first step, the question every build asks.
    const fakeBin = join(work, "no-dpkg");
    mkdirSync(fakeBin, { recursive: true });
    writeFileSync(join(fakeBin, "dpkg"), "#!/bin/sh\nexit 1\n");
    chmodSync(join(fakeBin, "dpkg"), 0o755);
    const result = await runCli(
      ["pull", "--image", "dev", "--skip-snapshot", "--json"],
      { ...env(), PATH: `${fakeBin}:${process.env.PATH}` },
      { bin },
    );
    expect(result.code).toBe(1);
    expect(result.json.error.code).toBe("DEV_IMAGE_BUILD_FAILED");
    expect(result.json.error.message).toContain("dpkg is missing");
    expect(result.json.error.hint).toContain(join(installed, "guest", "build-dev-image"));
  });
});

describe("without zstd-napi's addon", () => {
  const pull = (tag: string, home: string) =>
    runCli(
      ["pull", "--tag", tag, "--skip-snapshot", "--json"],
      { ...process.env, STACK_EMULATOR_HOME: home, GITHUB_API_URL: fake.apiUrl, GH_TOKEN: TOKEN, CI: "1" },
      { bin },
    );
  const pulledDisk = (home: string, tag: string) =>
    readFileSync(join(home, "images", `release-${tag}-amd64`, "stack-emulator-amd64.qcow2"));

  it("downloads the uncompressed disk of a release that has both, and says why", async () => {
    const home = tempHome();
    const result = await pull("emulator-both", home);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toContain("needs zstd-napi");
    expect(pulledDisk(home, "emulator-both").equals(disk)).toBe(true);
  });

  it("refuses a release with only a .zst disk with ZSTD_UNAVAILABLE and how to get zstd-napi, fetching nothing", async () => {
    const before = fake.requests.filter((r) => r.server === "storage").length;
    const result = await pull("emulator-zst-only", tempHome());
    expect(result.code).toBe(1);
    expect(result.json.error.code).toBe("ZSTD_UNAVAILABLE");
    expect(result.json.error.hint).toMatch(/optional dependency.*install stack-emulator again/);
    expect(fake.requests.filter((r) => r.server === "storage").length).toBe(before);
  });

  it("once the addon is built (the workspace's copy here), decompresses .zst downloads", async () => {
    const built = dirname(createRequire(join(cliDir, "package.json")).resolve("zstd-napi/package.json"));
    const target = join(installed, "node_modules", "zstd-napi", "build", "Release");
    mkdirSync(target, { recursive: true });
    copyFileSync(join(built, "build", "Release", "binding.node"), join(target, "binding.node"));
    const home = tempHome();
    const result = await pull("emulator-zst-only", home);
    expect(result.code, result.stderr).toBe(0);
    expect(pulledDisk(home, "emulator-zst-only").equals(disk)).toBe(true);
  });
});

describe("npx with the tarball", () => {
  it("runs stack-emulator from it", () => {
    // npx installs into the npm cache's _npx directory; what this run adds there is removed afterwards.
    const npxDir = join(
      execFileSync("npm", ["config", "get", "cache"], { encoding: "utf8" }).trim() || join(homedir(), ".npm"),
      "_npx",
    );
    const before = new Set(existsSync(npxDir) ? readdirSync(npxDir) : []);
    try {
      const out = execFileSync(
        "npx",
        [
          "--yes",
          "--prefer-offline",
          "--ignore-scripts",
          "--package",
          tarball,
          "stack-emulator",
          "--version",
        ],
        { cwd: work, encoding: "utf8", env: { ...process.env, npm_config_update_notifier: "false" } },
      );
      expect(out).toBe(`${version}\n`);
    } finally {
      for (const entry of existsSync(npxDir) ? readdirSync(npxDir) : [])
        if (!before.has(entry)) rmSync(join(npxDir, entry), { recursive: true, force: true });
    }
  });
});
