import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, afterEach, beforeAll, expect } from "vitest";
import { internalClientHeaders, PUBLISHABLE_KEY_NAME } from "../src/contract/contract.js";
import { type InstancePaths, instancePaths, resolveHome } from "../src/core/paths.js";
import { parseEnv } from "../src/guest/secrets.js";

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

/**
 * Shell lines run as root in a private mount namespace before the CLI starts: what it sees of this host. Tools by
 * their full path: the CLI's environment may have no PATH worth the name (see the missing-QEMU test).
 */
const NAMESPACE_SETUP = {
  /** The distro's QEMU binaries are not there. */
  hideQemu: 'for q in /usr/bin/qemu-system-*; do /usr/bin/mount --bind /dev/null "$q"; done',
  /**
   * A /dev/kvm that opens read-write, whatever this host has: whether kvm works is then up to the QEMU under test
   * (see brokenKvmQemu), never to this machine's own /dev/kvm.
   */
  kvmDevice: [
    "d=$(/usr/bin/mktemp -d /tmp/se-dev-XXXXXX)",
    "/usr/bin/mount -t tmpfs -o mode=0755 se-dev $d",
    'for n in null zero full random urandom tty; do : >"$d/$n"; /usr/bin/mount --bind "/dev/$n" "$d/$n"; done',
    ': >"$d/kvm"; /usr/bin/mount --bind /dev/null "$d/kvm"',
    '/usr/bin/mkdir "$d/shm"; /usr/bin/mount -t tmpfs shm "$d/shm"; /usr/bin/ln -s /proc/self/fd "$d/fd"',
    '/usr/bin/mount --move "$d" /dev; /usr/bin/rmdir "$d"',
  ].join(" && "),
  /** The home is a file system of 4 MiB: a disk too full for an image. */
  smallHome: '/usr/bin/mount -t tmpfs -o size=4m se-home "$STACK_EMULATOR_HOME"',
};

/**
 * Runs the built CLI, in a private mount namespace set up as the options say when any is set; `bin`: an installed
 * stack-emulator instead, executed as a user runs it.
 */
export function runCli(
  args: string[],
  env: NodeJS.ProcessEnv,
  options: { timeoutMs?: number; bin?: string } & { [K in keyof typeof NAMESPACE_SETUP]?: boolean } = {},
): Promise<CliResult> {
  const setup = (Object.keys(NAMESPACE_SETUP) as (keyof typeof NAMESPACE_SETUP)[])
    .filter((key) => options[key])
    .map((key) => NAMESPACE_SETUP[key]);
  const program = options.bin ? [options.bin] : [process.execPath, CLI];
  if (setup.length === 0) {
    const [file, ...rest] = program as [string, ...string[]];
    return collect(
      spawn(file, [...rest, ...args], { env, stdio: ["ignore", "pipe", "pipe"] }),
      options.timeoutMs,
    );
  }
  const command = [
    "-m",
    "--",
    "/bin/sh",
    "-c",
    `${setup.join(" && ")} && exec "$0" "$@"`,
    ...program,
    ...args,
  ];
  return collect(
    spawn("/usr/bin/unshare", command, { env, stdio: ["ignore", "pipe", "pipe"] }),
    options.timeoutMs,
  );
}

/** Starts the built CLI as a child of its own, for a test that signals it; `result` as `runCli`'s. */
export function startCli(
  args: string[],
  env: NodeJS.ProcessEnv,
  timeoutMs?: number,
): { child: ChildProcess; result: Promise<CliResult> } {
  const child = spawn(process.execPath, [CLI, ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
  return { child, result: collect(child, timeoutMs) };
}

function collect(child: ChildProcess, timeoutMs = 240_000): Promise<CliResult> {
  return new Promise((resolvePromise, reject) => {
    let stdout = "";
    let stderr = "";
    child.stdout?.on("data", (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr?.on("data", (d: Buffer) => {
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
  minio: number;
  inbucket: number;
}

/** The keys the CLI handed this instance's guest. */
export const keysOf = (inst: Instance) => parseEnv(readFileSync(instanceFiles(inst.home).keys, "utf8"));

export const apiStatus = (inst: Instance, key: string) => apiStatusWithKey(inst.backend, key);

/** Distinct free ports, one per name. */
export async function freePorts<K extends string>(names: readonly K[]): Promise<Record<K, number>> {
  const ports = {} as Record<K, number>;
  const taken = new Set<number>();
  for (const name of names) {
    let port = await freePort();
    while (taken.has(port)) port = await freePort();
    taken.add(port);
    ports[name] = port;
  }
  return ports;
}

/** A fresh home with its own free ports, booting under TCG; `env` adds to (or overrides) those variables. */
export async function newInstance(env: NodeJS.ProcessEnv): Promise<Instance> {
  const home = tempHome();
  const ports = await freePorts(["dashboard", "backend", "minio", "inbucket"] as const);
  return {
    home,
    ...ports,
    env: {
      ...process.env,
      STACK_EMULATOR_HOME: home,
      STACK_EMULATOR_DASHBOARD_PORT: String(ports.dashboard),
      STACK_EMULATOR_BACKEND_PORT: String(ports.backend),
      STACK_EMULATOR_MINIO_PORT: String(ports.minio),
      STACK_EMULATOR_INBUCKET_PORT: String(ports.inbucket),
      // This machine's /dev/kvm cannot boot a stock kernel (see shared/reference/qemu.md).
      EMULATOR_ACCEL: "tcg",
      CI: "1",
      ...env,
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
      const inst = await newInstance({ STACK_EMULATOR_IMAGE: imageDir });
      started.push(inst);
      return inst;
    },
  };
}

/** The publishable key the dev image bakes in: public, so it must stop working once a start says it rotated. */
export function placeholderPublishableKey(): string {
  return parseEnv(readFileSync(PLACEHOLDERS, "utf8"))[PUBLISHABLE_KEY_NAME] as string;
}

/** The backend's answer to a client of the internal project with this publishable key: 200 for the current one. */
export async function apiStatusWithKey(backendPort: number, key: string): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${backendPort}/api/v1/projects/current`, {
    headers: internalClientHeaders(key),
  });
  await res.arrayBuffer();
  return res.status;
}

/**
 * What a start printed about keys is what the backend does: `rotated` names a keys file whose publishable key works
 * while the placeholder gets 401; `skipped` names no file and the placeholder works.
 */
export async function expectKeysAsReported(
  backendPort: number,
  started: { rotation: string; keysFile?: string },
): Promise<void> {
  const placeholder = placeholderPublishableKey();
  if (started.rotation === "rotated") {
    expect(started.keysFile).toBeDefined();
    const keys = parseEnv(readFileSync(started.keysFile as string, "utf8"));
    expect(keys[PUBLISHABLE_KEY_NAME]).not.toBe(placeholder);
    expect(await apiStatusWithKey(backendPort, keys[PUBLISHABLE_KEY_NAME] as string)).toBe(200);
    expect(await apiStatusWithKey(backendPort, placeholder)).toBe(401);
  } else {
    expect(started.rotation).toBe("skipped");
    expect(started.keysFile).toBeUndefined();
    expect(await apiStatusWithKey(backendPort, placeholder)).toBe(200);
  }
}

/**
 * After a start that rotated again (a reset, another install): keys.env holds new keys, the new publishable key
 * works, and the previous one and the placeholder are refused. Returns the new keys.
 */
export async function expectKeysReplaced(
  inst: Instance,
  previous: ReturnType<typeof keysOf>,
): Promise<ReturnType<typeof keysOf>> {
  const fresh = keysOf(inst);
  expect(fresh[PUBLISHABLE_KEY_NAME]).not.toBe(previous[PUBLISHABLE_KEY_NAME]);
  expect(await apiStatus(inst, fresh[PUBLISHABLE_KEY_NAME] as string)).toBe(200);
  expect(await apiStatus(inst, previous[PUBLISHABLE_KEY_NAME] as string)).toBe(401);
  expect(await apiStatus(inst, placeholderPublishableKey())).toBe(401);
  return fresh;
}

/** The app's settings the dev image's backend renders from the config disk (credentials left out). */
export async function appConfig(inst: Instance): Promise<Record<string, string>> {
  return (await (await fetch(`http://127.0.0.1:${inst.backend}/api/v1/config`)).json()) as Record<
    string,
    string
  >;
}

/** An instance's files, named where the CLI names them (src/paths.ts), under a test's home. */
export function instanceFiles(home: string, name = "default"): InstancePaths {
  return instancePaths(resolveHome(home), name);
}

/** The image's current snapshot generation (`snapshots/<image>/<generation>`), if it has one. */
export function currentSnapshotDir(home: string, imageName: string): string | undefined {
  const root = join(home, "snapshots", imageName);
  try {
    return join(root, readFileSync(join(root, "current"), "utf8").trim());
  } catch {
    return undefined;
  }
}
