// Real servers for the docker/ and guest/cloud-init tests: a PostgreSQL cluster, a supervisord running the
// shipped supervisord.conf, and a helper to run the shipped scripts with stdin and a clean environment.
import { type ChildProcess, spawn } from "node:child_process";
import { chmod, chown, mkdir, mkdtemp, open, readdir, rm, writeFile } from "node:fs/promises";
import { request } from "node:http";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export const repoRoot = fileURLToPath(new URL("../../", import.meta.url));
export const dockerDir = join(repoRoot, "docker");
export const cloudInitDir = join(repoRoot, "guest", "cloud-init");

/** The values snapshot images bake in (render-stack-env writes them); public by construction. */
export const PLACEHOLDERS = {
  STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY: `${"0".repeat(32)}${"f".repeat(32)}`,
  STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY: `${"0".repeat(32)}${"e".repeat(32)}`,
  STACK_SEED_INTERNAL_PROJECT_SUPER_SECRET_ADMIN_KEY: `${"0".repeat(32)}${"d".repeat(32)}`,
  CRON_SECRET: `${"0".repeat(32)}${"c".repeat(32)}`,
} as const;
export type Secrets = Record<keyof typeof PLACEHOLDERS, string>;

export function randomSecrets(): Secrets {
  const hex = () => Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("hex");
  return {
    STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY: hex(),
    STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY: hex(),
    STACK_SEED_INTERNAL_PROJECT_SUPER_SECRET_ADMIN_KEY: hex(),
    CRON_SECRET: hex(),
  };
}

/** The rotated env file for these secrets: the four names, then the names the app reads them by (as rotate-secrets writes it). */
export function rotatedEnvFile(s: Secrets): string {
  return `${secretLines(s)}${secretLines({
    NEXT_PUBLIC_STACK_PUBLISHABLE_CLIENT_KEY: s.STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY,
    STACK_SECRET_SERVER_KEY: s.STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY,
    STACK_SUPER_SECRET_ADMIN_KEY: s.STACK_SEED_INTERNAL_PROJECT_SUPER_SECRET_ADMIN_KEY,
  })}`;
}

/** KEY=value lines; keys whose value is undefined are left out. */
export function secretLines(s: Partial<Record<string, string>>): string {
  return Object.entries(s)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}=${v}\n`)
    .join("");
}

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command with only the given environment (plus PATH), feeding `input` on stdin. */
export function run(
  cmd: string,
  args: string[],
  opts: { env?: Record<string, string>; input?: string; cwd?: string } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", ...opts.env },
      stdio: ["pipe", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      stdout += d;
    });
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      stderr += d;
    });
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
    child.stdin.on("error", () => {});
    child.stdin.end(opts.input ?? "");
  });
}

export async function mustRun(cmd: string, args: string[], opts: Parameters<typeof run>[2] = {}) {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(" ")} exited ${r.code}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === "object" && addr ? resolve(addr.port) : reject(new Error("no port"))));
    });
  });
}

/** Polls `probe` until it returns a value; rejects with the last error once `timeoutMs` has passed. */
export async function eventually<T>(
  probe: () => Promise<T | undefined>,
  what: string,
  timeoutMs = 90_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}: ${String(last ?? "no answer")}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export function httpGet(port: number, path = "/"): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path, timeout: 5_000 }, (res) => {
      let body = "";
      res.setEncoding("utf8").on("data", (d: string) => {
        body += d;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", reject);
    req.end();
  });
}

export async function postgresBinDir(): Promise<string> {
  const versions = (await readdir("/usr/lib/postgresql")).sort((a, b) => Number(b) - Number(a));
  if (versions.length === 0) throw new Error("PostgreSQL is not installed (apt-get install postgresql)");
  return `/usr/lib/postgresql/${versions[0]}/bin`;
}

export interface Postgres {
  socketDir: string;
  port: number;
  /** libpq URL in the form the app uses, including the Prisma-only `schema` parameter. */
  url: string;
  sql(query: string): Promise<string>;
  stop(): Promise<void>;
}

/**
 * A throwaway cluster in a dir its server owns: initdb refuses root, so as root the server runs as the `postgres`
 * user; otherwise as the user running the tests.
 */
export async function startPostgres(): Promise<Postgres> {
  const bin = await postgresBinDir();
  const dir = await mkdtemp(join(tmpdir(), "stack-pg-"));
  const asRoot = process.getuid?.() === 0;
  if (asRoot) {
    const uid = Number((await mustRun("id", ["-u", "postgres"])).trim());
    const gid = Number((await mustRun("id", ["-g", "postgres"])).trim());
    await chown(dir, uid, gid);
  }
  await chmod(dir, 0o755);
  const asPostgres = (cmd: string, args: string[]) =>
    asRoot
      ? mustRun("runuser", ["-u", "postgres", "--", join(bin, cmd), ...args], { cwd: dir })
      : mustRun(join(bin, cmd), args, { cwd: dir });
  const data = join(dir, "data");
  await asPostgres("initdb", [
    "-D",
    data,
    "-A",
    "trust",
    "-U",
    "postgres",
    "--no-sync",
    "-E",
    "UTF8",
    "--locale=C",
  ]);
  const port = await freePort();
  await asPostgres("pg_ctl", [
    "-D",
    data,
    "-l",
    join(dir, "server.log"),
    "-w",
    "-t",
    "60",
    "-o",
    `-k ${dir} -p ${port} -c listen_addresses='' -c fsync=off`,
    "start",
  ]);
  const sql = (query: string) =>
    mustRun(
      "psql",
      ["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", dir, "-p", String(port), "-U", "postgres"],
      {
        input: query,
      },
    );
  return {
    socketDir: dir,
    port,
    url: `postgresql://postgres@/postgres?host=${encodeURIComponent(dir)}&port=${port}&schema=public`,
    sql,
    async stop() {
      await asPostgres("pg_ctl", ["-D", data, "-m", "immediate", "-w", "stop"]).catch(() => {});
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export interface Supervisor {
  dir: string;
  /** Environment that makes supervisorctl (and the shipped config) find this supervisord. */
  env: Record<string, string>;
  ports: { backend: number; dashboard: number };
  stop(): Promise<void>;
}

/**
 * Runs the shipped docker/supervisord.conf with both app programs replaced by fixtures/app-server.mjs under a
 * launcher shell, started through the shipped entrypoint like the real programs.
 */
export async function startSupervisor(opts: {
  dir: string;
  programEnv: Record<string, string>;
}): Promise<Supervisor> {
  const runDir = join(opts.dir, "supervisor");
  const appDir = join(opts.dir, "app");
  await mkdir(runDir, { recursive: true });
  await mkdir(appDir, { recursive: true });
  const server = join(dockerDir, "test", "fixtures", "app-server.mjs");
  const ports = { backend: await freePort(), dashboard: await freePort() };
  // The shell stays as the launcher while node holds the port: signalling only the shell would orphan node.
  const command = `sh -c '${process.execPath} ${server} & wait'`;
  const env = {
    STACK_SUPERVISOR_RUN_DIR: runDir,
    STACK_ENTRYPOINT: join(dockerDir, "entrypoint.sh"),
    STACK_APP_DIR: appDir,
    STACK_BACKEND_COMMAND: command,
    STACK_DASHBOARD_COMMAND: command,
    BACKEND_PORT: String(ports.backend),
    DASHBOARD_PORT: String(ports.dashboard),
    STACK_SUPERVISOR_CONFIG: join(dockerDir, "supervisord.conf"),
  };
  const log = await open(join(opts.dir, "supervisord.log"), "a");
  const child: ChildProcess = spawn("supervisord", ["-c", env.STACK_SUPERVISOR_CONFIG], {
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", ...opts.programEnv, ...env },
    stdio: ["ignore", log.fd, log.fd],
  });
  const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
    await exited;
    await log.close();
  };
  try {
    for (const port of Object.values(ports)) {
      await eventually(async () => (await httpGet(port)).body || undefined, `app-server on port ${port}`);
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return { dir: opts.dir, env, ports, stop };
}

export interface AppAnswer {
  pid: number;
  launcherPid: number;
  /** The seed names the entrypoint loads, then the names the app's code reads (its mirrors of them). */
  seedPublishableClientKey?: string;
  seedSecretServerKey?: string;
  seedSuperSecretAdminKey?: string;
  publishableClientKey?: string;
  secretServerKey?: string;
  superSecretAdminKey?: string;
  cronSecret?: string;
}

export async function askApp(port: number): Promise<AppAnswer> {
  return JSON.parse((await httpGet(port)).body) as AppAnswer;
}

export async function writeExecutable(path: string, text: string): Promise<void> {
  await writeFile(path, text, { mode: 0o755 });
}
