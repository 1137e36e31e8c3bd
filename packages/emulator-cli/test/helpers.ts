import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, afterEach, beforeAll } from "vitest";
import { parseEnv } from "../src/secrets.js";

export const CLI = resolve(import.meta.dirname, "..", "dist", "stack-emulator.js");
export const GUEST = resolve(import.meta.dirname, "..", "..", "..", "guest");
export const PLACEHOLDERS = join(GUEST, "dev", "rootfs", "etc", "stack", "placeholder-secrets.env");

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
  // biome-ignore lint/suspicious/noExplicitAny: parsed JSON output of the CLI under test
  json: any;
}

/**
 * The QEMU of an instance, once its pid file names a live QEMU. QEMU creates the pid file before it writes the pid:
 * an empty read parses to 0, and `process.kill(0)` would signal this whole process group (the test run itself).
 */
export function runningQemuPid(pidFile: string): number | undefined {
  let pid: number;
  try {
    pid = Number.parseInt(readFileSync(pidFile, "utf8"), 10);
  } catch {
    return undefined;
  }
  if (!Number.isInteger(pid) || pid <= 1) return undefined;
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(pidFile) ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** Runs the built CLI. `hideQemu` runs it in a private mount namespace where the distro's QEMU is not there. */
export function runCli(
  args: string[],
  env: NodeJS.ProcessEnv,
  options: { timeoutMs?: number; hideQemu?: boolean } = {},
): Promise<CliResult> {
  const timeoutMs = options.timeoutMs ?? 240_000;
  const [command, commandArgs] = options.hideQemu
    ? [
        "/usr/bin/unshare",
        [
          "-m",
          "--",
          "/bin/sh",
          "-c",
          'for q in /usr/bin/qemu-system-*; do /usr/bin/mount --bind /dev/null "$q"; done && exec "$0" "$@"',
          process.execPath,
          CLI,
          ...args,
        ],
      ]
    : [process.execPath, [CLI, ...args]];
  return new Promise((resolvePromise, reject) => {
    const child = spawn(command, commandArgs, { env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      let json: unknown;
      try {
        json = JSON.parse(stdout);
      } catch {
        json = undefined;
      }
      resolvePromise({ code: code ?? -1, stdout, stderr, json });
    });
  });
}

const homes: string[] = [];

/** A fresh, short home directory (unix socket paths must stay short); removed by `removeTempHomes`. */
export function tempHome(prefix = "se-"): string {
  const home = mkdtempSync(join(tmpdir(), prefix));
  homes.push(home);
  return home;
}

/** Removes every home this test file made; call it once the instances in them are stopped. */
export function removeTempHomes(): void {
  for (const home of homes.splice(0)) rmSync(home, { recursive: true, force: true });
}

export function freePort(): Promise<number> {
  return new Promise((resolvePromise, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolvePromise(port));
    });
  });
}

export type GuestArch = "amd64" | "arm64";

/**
 * The dev image for tests, in one place shared by every test file: the builder's content cache turns every build
 * after the first into a check.
 */
function buildDevImage(arch: GuestArch): string {
  const out = join(tmpdir(), "stack-emulator-test-images", arch === "amd64" ? "dev" : `dev-${arch}`);

  const json = execFileSync(join(GUEST, "build-dev-image"), ["--arch", arch, "--out", out, "--json"], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
  });
  return JSON.parse(json.trim().split("\n").pop() as string).path;
}

export interface Instance {
  home: string;
  env: NodeJS.ProcessEnv;
  dashboard: number;
  backend: number;
}

/** The keys the CLI handed this instance's guest. */
export const keysOf = (inst: Instance) =>
  parseEnv(readFileSync(join(inst.home, "instances", "default", "keys.env"), "utf8"));

/** The backend's answer to a publishable key: 200 for the current one, 401 otherwise. */
export async function apiStatus(inst: Instance, key: string): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${inst.backend}/api/v1/projects/current`, {
    headers: { "x-stack-publishable-client-key": key },
  });
  await res.arrayBuffer();
  return res.status;
}

/** A fresh home with its own free ports, booting `imageDir` under TCG. */
async function newInstance(imageDir: string): Promise<Instance> {
  const home = tempHome();
  const dashboard = await freePort();
  let backend = await freePort();
  while (backend === dashboard) backend = await freePort();
  return {
    home,
    dashboard,
    backend,
    env: {
      ...process.env,
      STACK_EMULATOR_HOME: home,
      STACK_EMULATOR_IMAGE: imageDir,
      STACK_EMULATOR_DASHBOARD_PORT: String(dashboard),
      STACK_EMULATOR_BACKEND_PORT: String(backend),
      // This machine's /dev/kvm cannot boot a stock kernel (see shared/reference/qemu.md).
      EMULATOR_ACCEL: "tcg",
      CI: "1",
    },
  };
}

export interface DevImageFixture {
  readonly imageDir: string;
  readonly imageName: string;
  /** A new instance on the dev image, stopped after the test that made it. */
  instance(): Promise<Instance>;
}

/** Hooks for a test file that boots the dev image: build it first, stop every instance after each test, clean up. */
export function devImageFixture(arch: GuestArch = "amd64"): DevImageFixture {
  let imageDir = "";
  let imageName = "";
  const started: Instance[] = [];
  beforeAll(() => {
    imageDir = buildDevImage(arch);
    imageName = JSON.parse(readFileSync(join(imageDir, "image.json"), "utf8")).name;
  }, 600_000);
  afterEach(async () => {
    for (const inst of started.splice(0)) await runCli(["stop", "--no-save"], inst.env);
  }, 120_000);
  afterAll(removeTempHomes);
  return {
    get imageDir() {
      return imageDir;
    },
    get imageName() {
      return imageName;
    },
    async instance() {
      const inst = await newInstance(imageDir);
      started.push(inst);
      return inst;
    },
  };
}
