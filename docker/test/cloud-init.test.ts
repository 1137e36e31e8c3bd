// The real image's cloud-init config: in sync with the scripts it embeds, accepted by cloud-init's own schema
// check, and every shell script of docker/ and guest/cloud-init shellcheck-clean.
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cloudInitDir, dockerDir, mustRun, repoRoot, run } from "./harness.js";

let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "stack-cloud-init-"));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

interface WriteFile {
  path: string;
  content: string;
  permissions?: string;
}

/** Parsed by PyYAML, the parser cloud-init itself uses. */
async function parseYaml<T>(file: string): Promise<T> {
  const json = await mustRun("python3", [
    "-c",
    "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
    file,
  ]);
  return JSON.parse(json) as T;
}

interface CloudConfig {
  write_files: WriteFile[];
  packages: string[];
  runcmd: string[];
  power_state: { mode: string };
}

describe("guest/cloud-init/user-data", () => {
  const userData = join(cloudInitDir, "user-data");
  let config: CloudConfig;

  beforeAll(async () => {
    config = await parseYaml<CloudConfig>(userData);
  });

  it("is what render-user-data makes of the template and the scripts", async () => {
    const fresh = join(dir, "user-data");
    await mustRun(join(cloudInitDir, "render-user-data"), [fresh]);
    expect(await readFile(userData, "utf8")).toBe(await readFile(fresh, "utf8"));
    expect((await run(join(cloudInitDir, "render-user-data"), ["--check"])).code).toBe(0);
  });

  it("passes cloud-init's schema validation", async () => {
    const r = await run("cloud-init", ["schema", "--config-file", userData]);
    expect(r.stderr).toBe("");
    expect(r.stdout).toMatch(/^Valid cloud-config/);
    expect(r.code).toBe(0);
  });

  it("fails cloud-init's schema validation when broken, so the check above can fail", async () => {
    const broken = join(dir, "broken");
    await mustRun("sh", [
      "-c",
      `sed 's/^package_update: true/package_update: sometimes/' '${userData}' >'${broken}'`,
    ]);
    const r = await run("cloud-init", ["schema", "--config-file", broken]);
    expect(r.code).not.toBe(0);
    expect(`${r.stdout}${r.stderr}`).toMatch(/package_update/);
  });

  it("ships byte-for-byte the scripts the tests run, executable", async () => {
    const shipped = new Map(config.write_files.map((f) => [f.path, f]));
    const sources: [string, string, string][] = [
      ["/usr/local/lib/stack-emulator/secret-input.sh", join(dockerDir, "lib", "secret-input.sh"), "0644"],
      ["/usr/local/bin/render-stack-env", join(cloudInitDir, "scripts", "render-stack-env"), "0755"],
      ["/usr/local/bin/apply-runtime-config", join(cloudInitDir, "scripts", "apply-runtime-config"), "0755"],
      ["/usr/local/bin/trigger-fast-rotate", join(cloudInitDir, "scripts", "trigger-fast-rotate"), "0755"],
      ["/usr/local/bin/wait-for-stack-ready", join(cloudInitDir, "scripts", "wait-for-stack-ready"), "0755"],
      ["/etc/stack-emulator/compose.yaml", join(cloudInitDir, "compose.yaml"), "0644"],
    ];
    for (const [path, source, mode] of sources) {
      expect(shipped.get(path)?.content, path).toBe(await readFile(source, "utf8"));
      expect(shipped.get(path)?.permissions, path).toBe(mode);
    }
  });

  it("installs and starts the guest agent, and checks readiness before the image is shut down", async () => {
    const config = await parseYaml<{ packages: string[]; runcmd: string[]; power_state: { mode: string } }>(
      userData,
    );
    expect(config.packages).toContain("qemu-guest-agent");
    expect(config.packages).toContain("libarchive-tools");
    const steps = config.runcmd;
    expect(steps[0]).toBe("set -eu");
    expect(steps).toContain("systemctl start qemu-guest-agent");
    expect(steps.indexOf("render-stack-env")).toBeLessThan(
      steps.indexOf("systemctl enable --now stack-emulator.service"),
    );
    expect(steps.indexOf("wait-for-stack-ready")).toBeLessThan(steps.indexOf("echo STACK-EMULATOR-BUILD-OK"));
    expect(steps.at(-1)).toBe("echo STACK-EMULATOR-BUILD-OK");
    expect(config.power_state.mode).toBe("poweroff");
  });

  it("has meta-data with an instance id", async () => {
    const meta = await parseYaml<Record<string, string>>(join(cloudInitDir, "meta-data"));
    expect(meta["instance-id"]).toMatch(/^stack-emulator/);
  });
});

describe("shell scripts", () => {
  const scripts = [
    "docker/rotate-secrets",
    "docker/entrypoint.sh",
    "docker/prepare-app",
    "docker/lib/secret-input.sh",
    "guest/cloud-init/render-user-data",
    "guest/cloud-init/scripts/render-stack-env",
    "guest/cloud-init/scripts/apply-runtime-config",
    "guest/cloud-init/scripts/trigger-fast-rotate",
    "guest/cloud-init/scripts/wait-for-stack-ready",
    "guest/build-image",
  ];

  it("are shellcheck-clean", async () => {
    const r = await run("shellcheck", ["-x", ...scripts], { cwd: repoRoot });
    expect(r.stdout).toBe("");
    expect(r.code).toBe(0);
  });

  it("parse with bash -n, including build-image which CI never runs", async () => {
    for (const s of scripts) {
      const r = await run("bash", ["-n", s], { cwd: repoRoot });
      expect(r.stderr, s).toBe("");
    }
  });

  it("build-image explains itself without touching the network", async () => {
    const r = await run(join(repoRoot, "guest", "build-image"), ["--help"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/usage: guest\/build-image/);
  });
});
