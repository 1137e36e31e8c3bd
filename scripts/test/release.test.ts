// The release scripts the workflows call, on their failure paths and the states GitHub can be in: .ci/run's
// rehearsal (scripts/release/rehearse) runs each of them once on the way a first release goes.

import { execFileSync, spawnSync } from "node:child_process";
import {
  appendFileSync,
  chmodSync,
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";

const root = resolve(import.meta.dirname, "..", "..");
const release = join(root, "scripts", "release");
const work = mkdtempSync(join(tmpdir(), "release-scripts-"));
const SHA = "0123456789abcdef0123456789abcdef01234567";
const env = { ...process.env, REPO: "owner/name", BRANCH: "dev", SHA };

afterAll(() => rmSync(work, { recursive: true, force: true }));

function runScript(script: string, args: string[], extraEnv: NodeJS.ProcessEnv = {}) {
  const result = spawnSync(join(release, script), args, { env: { ...env, ...extraEnv }, encoding: "utf8" });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

/** What the build jobs upload: per architecture a qcow2 and the SHA256SUMS guest/build-image wrote beside it. */
function artifacts(archs = ["amd64", "arm64"]): string {
  const dir = mkdtempSync(join(work, "artifacts-"));
  for (const arch of archs) {
    const at = join(dir, `qemu-emulator-${arch}`);
    mkdirSync(at);
    execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", join(at, `stack-emulator-${arch}.qcow2`), "1M"]);
    execFileSync("bash", ["-c", `cd "${at}" && sha256sum stack-emulator-${arch}.qcow2 >SHA256SUMS`]);
  }
  return dir;
}

describe("image-release-files", () => {
  it("makes the disks pull downloads, a SHA256SUMS that sha256sum -c accepts, and notes naming the build", () => {
    const out = join(work, "release-ok");
    const made = runScript("image-release-files", [artifacts(), out]);
    expect(made.code, made.stderr).toBe(0);
    expect(execFileSync("sha256sum", ["-c", "SHA256SUMS"], { cwd: out, encoding: "utf8" })).toBe(
      "stack-emulator-amd64.qcow2: OK\nstack-emulator-arm64.qcow2: OK\n",
    );
    const notes = readFileSync(join(out, "notes.md"), "utf8");
    expect(notes).toContain(SHA);
    expect(notes).toContain("stack-emulator pull --repo owner/name --branch dev");
  });

  it("refuses a build with an architecture missing", () => {
    const made = runScript("image-release-files", [artifacts(["amd64"]), join(work, "release-half")]);
    expect(made.code).toBe(1);
    expect(made.stderr).toContain("the arm64 build did not upload its artifact");
  });

  it("refuses a disk that is not the one the build's SHA256SUMS names, or no qcow2 at all", () => {
    const changed = artifacts();
    appendFileSync(join(changed, "qemu-emulator-arm64", "stack-emulator-arm64.qcow2"), "x");
    const made = runScript("image-release-files", [changed, join(work, "release-changed")]);
    expect(made.code).toBe(1);
    expect(made.stderr).toContain("does not match the SHA256SUMS guest/build-image wrote beside it");

    const html = artifacts();
    writeFileSync(
      join(html, "qemu-emulator-amd64", "stack-emulator-amd64.qcow2"),
      "<html>rate limited</html>",
    );
    const refused = runScript("image-release-files", [html, join(work, "release-html")]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("is not a qcow2 image");
  });
});

describe("publish-image-release", () => {
  const files = join(work, "release-publish");
  const log = join(work, "gh.log");
  /** A gh that records its calls; `release view` finds a release only when `exists`. */
  function gh(exists: boolean): string {
    const path = join(work, exists ? "gh-existing" : "gh-new");
    writeFileSync(
      path,
      `#!/usr/bin/env bash\nprintf '%s\\n' "$*" >>${JSON.stringify(log)}\n${exists ? "exit 0" : '[ "$1 $2" != "release view" ]'}\n`,
    );
    chmodSync(path, 0o755);
    return path;
  }
  const calls = () =>
    readFileSync(log, "utf8")
      .trim()
      .split("\n")
      .filter((line) => !line.startsWith("release view"));

  it("updates releases that exist: the dated one completed in place, -latest hidden while re-uploaded, its tag moved", () => {
    expect(runScript("image-release-files", [artifacts(), files]).code).toBe(0);
    rmSync(log, { force: true });
    const published = runScript("publish-image-release", [files], { GH: gh(true), DATE: "20261206" });
    expect(published.code, published.stderr).toBe(0);
    const assets = ["amd64.qcow2", "arm64.qcow2"].map((f) => join(files, `stack-emulator-${f}`));
    const upload = (tag: string) =>
      `release upload ${tag} --repo owner/name --clobber ${assets.join(" ")} ${join(files, "SHA256SUMS")}`;
    expect(calls()).toEqual([
      upload("emulator-dev-20261206-01234567"),
      `release edit emulator-dev-20261206-01234567 --repo owner/name --prerelease --title stack-emulator images, dev 01234567 --notes-file ${join(files, "notes.md")}`,
      `release edit emulator-dev-latest --repo owner/name --draft=true --prerelease --title stack-emulator images, dev (latest) --notes-file ${join(files, "notes.md")}`,
      `api --method PATCH repos/owner/name/git/refs/tags/emulator-dev-latest -f sha=${SHA} -F force=true`,
      upload("emulator-dev-latest"),
      "release edit emulator-dev-latest --repo owner/name --draft=false --prerelease",
    ]);
  });

  it("refuses a branch that cannot name a tag, and images that SHA256SUMS does not describe", () => {
    expect(runScript("image-release-files", [artifacts(), files]).code).toBe(0);
    const branch = runScript("publish-image-release", [files], { GH: gh(false), BRANCH: "dev; rm -rf /" });
    expect(branch.code).toBe(1);
    expect(branch.stderr).toContain("cannot name a release");
    appendFileSync(join(files, "stack-emulator-amd64.qcow2"), "x");
    rmSync(log, { force: true });
    const tampered = runScript("publish-image-release", [files], { GH: gh(false) });
    expect(tampered.code).toBe(1);
    expect(tampered.stderr).toContain("SHA256SUMS does not match the images");
    expect(() => readFileSync(log)).toThrow();
  });
});

describe("check-repository", () => {
  it("names each package whose repository is not the root's, with its own folder", () => {
    const tree = mkdtempSync(join(work, "tree-"));
    mkdirSync(join(tree, "scripts", "release"), { recursive: true });
    copyFileSync(join(release, "check-repository"), join(tree, "scripts", "release", "check-repository"));
    const url = "git+https://github.com/owner/name.git";
    const manifest = (dir: string, repository: object) => {
      mkdirSync(join(tree, dir), { recursive: true });
      writeFileSync(join(tree, dir, "package.json"), JSON.stringify({ name: dir, repository }));
    };
    manifest(".", { type: "git", url });
    manifest("packages/good", { type: "git", url, directory: "packages/good" });
    manifest("packages/moved", { type: "git", url, directory: "packages/elsewhere" });
    const checked = spawnSync(join(tree, "scripts", "release", "check-repository"), ["owner/name"], {
      encoding: "utf8",
    });
    expect(checked.status).toBe(1);
    expect(checked.stderr).toContain("packages/moved/package.json: repository is");
    expect(checked.stderr).not.toContain("packages/good");
  });
});

describe("build-containers", () => {
  it("fails when docker reports no digest to pin the image to", () => {
    const upstream = join(work, "upstream");
    mkdirSync(join(upstream, "docker", "mock-oauth-server"), { recursive: true });
    writeFileSync(join(upstream, "docker", "mock-oauth-server", "Dockerfile"), "FROM scratch\n");
    const docker = join(work, "docker-no-digest");
    writeFileSync(
      docker,
      '#!/usr/bin/env bash\nwhile [ $# -gt 0 ]; do [ "$1" = --metadata-file ] && echo "{}" >"$2"; shift; done; exit 0\n',
    );
    chmodSync(docker, 0o755);
    const built = runScript("build-containers", ["ghcr.io/owner", "tag", upstream], { DOCKER: docker });
    expect(built.code).toBe(1);
    expect(built.stderr).toContain("docker reported no digest for ghcr.io/owner/stack-emulator-app:tag");
  });
});
