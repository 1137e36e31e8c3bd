// The guest side of the real image (guest/cloud-init/scripts), run on the host: render-stack-env mounting the config
// disk as the CLI writes it, mount-host-fs in a private mount namespace, run-stack-container with a stand-in for the
// docker CLI only, wait-for-stack-ready against a real HTTP server.

import { readFileSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeConfigDisk } from "../../packages/emulator-cli/src/contract/config-disk.js";
import { configDiskFiles } from "../../packages/emulator-cli/src/contract/contract.js";
import { cloudInitDir, dockerDir, freePort, mustRun, PLACEHOLDERS, run, writeExecutable } from "./harness.js";

const scripts = join(cloudInitDir, "scripts");
// Mounting (the config disk, /host) needs root; each script then runs in a mount namespace of its own, so no mount
// outlives it.
const isRoot = process.getuid?.() === 0;
// Where the kernel has no iso9660 (this machine's has none; the guests' kernels do, and the Debian image's VM test
// mounts its config disk with it), `mount` of an ISO is stood in for: bsdtar unpacks it and the files are bound
// read-only onto the mount point, so everything else (mountpoint checks, umount) is the real thing.
const kernelHasIso9660 = readFileSync("/proc/filesystems", "utf8").includes("iso9660");
let dir: string;
let mountStandIn: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "stack-guest-"));
  mountStandIn = join(dir, "mount-stand-in");
  await mkdir(mountStandIn);
  await writeExecutable(
    join(mountStandIn, "mount"),
    [
      "#!/bin/sh",
      'if [ "$1 $2 $3" = "-o ro --" ]; then',
      '  unpacked=$(mktemp -d) && bsdtar -xf "$4" -C "$unpacked" && exec /usr/bin/mount --bind "$unpacked" "$5"',
      "  exit 32",
      "fi",
      'exec /usr/bin/mount "$@"',
      "",
    ].join("\n"),
  );
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

let isoCount = 0;
/** A config disk made by xorriso, for the cases the CLI never writes. */
async function xorrisoIso(files: Record<string, string>, volumeId = "STACKCFG"): Promise<string> {
  isoCount++;
  const src = join(dir, `iso-src-${isoCount}`);
  await mkdir(src);
  for (const [name, content] of Object.entries(files)) await writeFile(join(src, name), content);
  const iso = join(dir, `config-${isoCount}.iso`);
  await mustRun("xorriso", ["-as", "mkisofs", "-quiet", "-V", volumeId, "-J", "-R", "-o", iso, src]);
  return iso;
}

/** The config disk exactly as the CLI writes it for a prefix and host ports (contract.ts, config-disk.ts). */
async function cliConfigDisk(prefix: string, hostPorts: number[]): Promise<string> {
  isoCount++;
  const names = ["dashboard", "backend", "minio", "inbucket"];
  const services = names.map((name, i) => ({ name, hostPort: hostPorts[i] as number, guestPort: 0 }));
  const iso = join(dir, `cli-config-${isoCount}.iso`);
  await writeConfigDisk(iso, configDiskFiles(prefix, services as never).files);
  return iso;
}

interface Guest {
  root: string;
  env: Record<string, string>;
  appEnv: string;
  keysDir: string;
}

/** The guest's paths under a temp dir, with a config disk and, for a snapshot build, /etc/stack-build.env. */
async function guest(name: string, device: string, snapshotBuild: boolean): Promise<Guest> {
  const root = join(dir, name);
  await mkdir(root, { recursive: true });
  const buildEnv = join(root, "stack-build.env");
  if (snapshotBuild) await writeFile(buildEnv, "STACK_BUILD_APP_IMAGE=x\nSTACK_EMULATOR_BUILD_SNAPSHOT=1\n");
  const appEnv = join(root, "run", "local-emulator.env");
  const keysDir = join(root, "keys");
  const env = {
    STACK_EMULATOR_LIB: join(dockerDir, "lib"),
    STACK_CONFIG_DEVICE: device,
    STACK_RUNTIME_MOUNT: join(root, "mnt"),
    STACK_BUILD_ENV: buildEnv,
    STACK_KEYS_DIR: keysDir,
    STACK_APP_ENV: appEnv,
  };
  return { root, env, appEnv, keysDir };
}

/**
 * Runs a shell script (`$S` is the scripts directory) in a private mount namespace. --norc: bash reads bashrc when
 * its stdin is a socket, as Node's pipes are.
 */
const inNamespace = (script: string, env: Record<string, string>) =>
  run(
    "unshare",
    ["--mount", "--propagation", "private", "bash", "--norc", "-euo", "pipefail", "-c", script],
    {
      env: {
        ...env,
        S: scripts,
        PATH: kernelHasIso9660 ? (process.env.PATH as string) : `${mountStandIn}:${process.env.PATH}`,
      },
    },
  );

/** What render-stack-env appends after the disk's files, for a prefix and host ports, as the original computes it. */
function computed(p: string, [dashboard, backend, minio]: number[]): string {
  return `${[
    "STACK_SKIP_MIGRATIONS=true",
    "STACK_SKIP_SEED_SCRIPT=true",
    `NEXT_PUBLIC_STACK_PORT_PREFIX=${p}`,
    "STACK_RUNTIME_WORK_DIR=/app",
    "STACK_LOCAL_EMULATOR_HOST_MOUNT_ROOT=/host",
    `NEXT_PUBLIC_STACK_API_URL=http://localhost:${backend}`,
    `NEXT_PUBLIC_STACK_DASHBOARD_URL=http://localhost:${dashboard}`,
    `NEXT_PUBLIC_BROWSER_STACK_API_URL=http://localhost:${backend}`,
    `NEXT_PUBLIC_BROWSER_STACK_DASHBOARD_URL=http://localhost:${dashboard}`,
    `NEXT_PUBLIC_SERVER_STACK_API_URL=http://127.0.0.1:${p}02`,
    `NEXT_PUBLIC_SERVER_STACK_DASHBOARD_URL=http://127.0.0.1:${p}01`,
    `NEXT_PUBLIC_STACK_SVIX_SERVER_URL=http://localhost:${backend}`,
    "STACK_DATABASE_CONNECTION_STRING=postgres://postgres:PASSWORD-PLACEHOLDER--uqfEC1hmmv@127.0.0.1:5432/stackframe",
    "STACK_EMAIL_HOST=127.0.0.1",
    "STACK_SVIX_SERVER_URL=http://127.0.0.1:8071",
    "STACK_S3_ENDPOINT=http://127.0.0.1:9090",
    `STACK_S3_PUBLIC_ENDPOINT=http://localhost:${minio}/stack-storage`,
    "STACK_QSTASH_URL=http://127.0.0.1:8080",
    "STACK_CLICKHOUSE_URL=http://127.0.0.1:8123",
    `STACK_EMAIL_MONITOR_VERIFICATION_CALLBACK_URL=http://localhost:${dashboard}/handler/email-verification`,
    "STACK_EMAIL_MONITOR_INBUCKET_API_URL=http://127.0.0.1:9001",
    `STACK_OAUTH_MOCK_URL=http://localhost:${p}14`,
    "STACK_FREESTYLE_API_ENDPOINT=http://127.0.0.1:8180",
    "STACK_STRIPE_MOCK_PORT=12111",
    "NEXT_PUBLIC_STACK_STRIPE_PUBLISHABLE_KEY=pk_test_mock_publishable_key_for_local_emulator",
    `BACKEND_PORT=${p}02`,
    `DASHBOARD_PORT=${p}01`,
  ].join("\n")}\n`;
}

/** The env as the app gets it: the last of a name wins, as with docker's --env-file. */
function lastWins(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line);
    if (m) out[m[1] as string] = m[2] as string;
  }
  return out;
}

describe.runIf(isRoot)("render-stack-env (as root: it mounts the config disk)", () => {
  const render = (g: Guest) => inNamespace('"$S/render-stack-env"', g.env);

  it("renders the CLI's disk as the original computes it, with the placeholders in a snapshot build", async () => {
    const ports = [26700, 26701, 26702, 26703];
    const iso = await cliConfigDisk("81", ports);
    const g = await guest("snapshot", iso, true);
    const r = await render(g);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const files = configDiskFiles("81", [
      { name: "dashboard", hostPort: 26700 },
      { name: "backend", hostPort: 26701 },
      { name: "minio", hostPort: 26702 },
      { name: "inbucket", hostPort: 26703 },
    ] as never).files;
    const keys = Object.entries(PLACEHOLDERS)
      .map(([k, v]) => `${k}=${v}\n`)
      .join("");
    expect(await readFile(g.appEnv, "utf8")).toBe(
      `${files["base.env"]}${files["runtime.env"]}${keys}${computed("81", ports)}`,
    );
    expect((await stat(g.appEnv)).mode & 0o777).toBe(0o600);
    // run-stack-container copies the key in service from here when the host asks for it.
    expect(await readFile(join(g.keysDir, "internal-pck"), "utf8")).toBe(
      PLACEHOLDERS.STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY,
    );
    expect((await stat(join(g.keysDir, "internal-sak"))).mode & 0o777).toBe(0o600);
  });

  it("computes the guest ports from the prefix and the browser URLs from the host ports", async () => {
    const ports = [31000, 31001, 31002, 31003];
    const g = await guest("prefix", await cliConfigDisk("72", ports), true);
    expect((await render(g)).code).toBe(0);
    const app = lastWins(await readFile(g.appEnv, "utf8"));
    // base.env says 8102 and 8101 first; the computed values come later and win.
    expect(app.BACKEND_PORT).toBe("7202");
    expect(app.DASHBOARD_PORT).toBe("7201");
    expect(app.STACK_OAUTH_MOCK_URL).toBe("http://localhost:7214");
    expect(app.NEXT_PUBLIC_STACK_API_URL).toBe("http://localhost:31001");
    expect(app.STACK_S3_PUBLIC_ENDPOINT).toBe("http://localhost:31002/stack-storage");
    expect(app.CRON_SECRET).toBe(PLACEHOLDERS.CRON_SECRET);
  });

  it("mints random keys on the first boot of an image not built for snapshots, and keeps them", async () => {
    const g = await guest("random", await cliConfigDisk("81", [1, 2, 3, 4]), false);
    expect((await render(g)).code).toBe(0);
    const first = lastWins(await readFile(g.appEnv, "utf8"));
    expect(first.STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY).toMatch(/^[0-9a-f]{64}$/);
    expect(first.STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY).toMatch(/^[0-9a-f]{64}$/);
    expect(first.STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY).not.toBe(
      first.STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY,
    );
    // CRON_SECRET is left to the container (base.env's development value stays, as in the original).
    expect(first.CRON_SECRET).not.toBe(PLACEHOLDERS.CRON_SECRET);
    expect((await render(g)).code).toBe(0);
    const second = lastWins(await readFile(g.appEnv, "utf8"));
    expect(second.STACK_SEED_INTERNAL_PROJECT_SUPER_SECRET_ADMIN_KEY).toBe(
      first.STACK_SEED_INTERNAL_PROJECT_SUPER_SECRET_ADMIN_KEY,
    );
  });

  it("reads a disk already mounted; after an unmount (as the CLI's re-apply does) it reads the new one", async () => {
    const g = await guest("remount", await cliConfigDisk("81", [26700, 26701, 26702, 26703]), true);
    const moved = await cliConfigDisk("81", [36700, 36701, 36702, 36703]);
    const r = await inNamespace(
      [
        '"$S/render-stack-env"',
        'grep "^NEXT_PUBLIC_STACK_API_URL=" "$STACK_APP_ENV"',
        'STACK_CONFIG_DEVICE="$MOVED" "$S/render-stack-env"',
        'grep "^NEXT_PUBLIC_STACK_API_URL=" "$STACK_APP_ENV"',
        'umount "$STACK_RUNTIME_MOUNT"',
        'STACK_CONFIG_DEVICE="$MOVED" "$S/render-stack-env"',
        'grep "^NEXT_PUBLIC_STACK_API_URL=" "$STACK_APP_ENV"',
      ].join("\n"),
      { ...g.env, MOVED: moved },
    );
    expect(r.stderr).toBe("");
    expect(r.stdout.trim().split("\n")).toEqual([
      "NEXT_PUBLIC_STACK_API_URL=http://localhost:26701",
      "NEXT_PUBLIC_STACK_API_URL=http://localhost:26701",
      "NEXT_PUBLIC_STACK_API_URL=http://localhost:36701",
    ]);
  });

  const rejected: [string, () => Promise<string>, RegExp][] = [
    [
      "a missing disk",
      async () => join(dir, "no-such-disk"),
      /no config disk \(ISO 9660 volume id STACKCFG\)/,
    ],
    [
      "a disk without base.env",
      () => xorrisoIso({ "runtime.env": "STACK_EMULATOR_PORT_PREFIX=81\n" }),
      /the config disk has no base.env/,
    ],
    [
      "a host port that is not a number",
      async () =>
        xorrisoIso({
          "base.env": "A=1\n",
          "runtime.env":
            "STACK_EMULATOR_PORT_PREFIX=81\nSTACK_EMULATOR_DASHBOARD_HOST_PORT=26700\nSTACK_EMULATOR_BACKEND_HOST_PORT=x\nSTACK_EMULATOR_MINIO_HOST_PORT=1\nSTACK_EMULATOR_INBUCKET_HOST_PORT=2\n",
        }),
      /runtime.env: STACK_EMULATOR_BACKEND_HOST_PORT must be a number, not 'x'/,
    ],
  ];

  it.each(rejected)(
    "refuses %s with a message and leaves the env it rendered before",
    async (name, device, message) => {
      const g = await guest(
        `rejected-${name.replaceAll(" ", "-")}`,
        await cliConfigDisk("81", [1, 2, 3, 4]),
        true,
      );
      expect((await render(g)).code).toBe(0);
      const before = await readFile(g.appEnv, "utf8");
      const r = await render({ ...g, env: { ...g.env, STACK_CONFIG_DEVICE: await device() } });
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(message);
      expect(await readFile(g.appEnv, "utf8")).toBe(before);
    },
  );
});

describe.runIf(isRoot)("mount-host-fs (as root, in a mount namespace of its own)", () => {
  const mountHostFs = (host: string, args: string[]) =>
    inNamespace(
      [
        `"$S/mount-host-fs" ${args.join(" ")} && status=0 || status=$?`,
        `"$S/mount-host-fs" ${args.join(" ")} || true`,
        'findmnt --noheadings --output PROPAGATION --mountpoint "$STACK_HOST_MOUNT"',
        'grep -c " $STACK_HOST_MOUNT " /proc/self/mounts',
        'exit "$status"',
      ].join("\n"),
      { STACK_HOST_MOUNT: host },
    );

  it("makes /host a shared mount point of its own and carries on without a share at boot", async () => {
    const host = join(dir, "host-boot");
    const r = await mountHostFs(host, []);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/mount-host-fs: no host share attached; .* stays empty/);
    // Shared, so that a share mounted later propagates into the container's rshared bind; bound once, however
    // often it runs.
    expect(r.stdout.trim().split("\n")).toEqual(["shared", "1"]);
  });

  it("fails after a resume when the share the host plugged in cannot be mounted", async () => {
    const r = await mountHostFs(join(dir, "host-resume"), ["--post-resume"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/mount-host-fs: the 9p share hostfs could not be mounted on .*host-resume/);
    expect(r.stdout.trim().split("\n")).toEqual(["shared", "1"]);
  });
});

describe("run-stack-container", () => {
  let calls: string;
  let base: Record<string, string>;
  let appEnv: string;
  let hostDir: string;

  beforeAll(async () => {
    const root = join(dir, "run-stack");
    const bin = join(root, "bin");
    const runtime = join(root, "mnt");
    calls = join(root, "calls");
    appEnv = join(root, "local-emulator.env");
    hostDir = join(root, "host");
    await Promise.all([bin, runtime, hostDir, join(root, "keys")].map((d) => mkdir(d, { recursive: true })));
    await writeFile(
      join(root, "keys", "internal-pck"),
      PLACEHOLDERS.STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY,
    );
    const baseEnv = configDiskFiles("72", [] as never).files["base.env"];
    // What render-stack-env would have rendered (its own tests check that); the stub writes it.
    const rendered = `${baseEnv}STACK_EMULATOR_PORT_PREFIX=72\n${computed("72", [1, 2, 3])}`;
    await writeFile(join(root, "rendered.env"), rendered);
    await writeExecutable(join(bin, "mount-host-fs"), `#!/bin/sh\necho "mount-host-fs $*" >>'${calls}'\n`);
    await writeExecutable(
      join(bin, "render-stack-env"),
      `#!/bin/sh\necho render-stack-env >>'${calls}'\ncp '${join(root, "rendered.env")}' '${appEnv}'\n`,
    );
    // The docker CLI's stand-in: it logs its arguments and the credentials it got through its environment; the app
    // container prints a line and exits with $APP_STATUS.
    await writeExecutable(
      join(bin, "docker"),
      [
        "#!/bin/sh",
        `echo "docker $*" >>'${calls}'`,
        'case "$*" in',
        `  *"--name stack-postgres "*) echo "env POSTGRES_USER=$POSTGRES_USER POSTGRES_PASSWORD=$POSTGRES_PASSWORD POSTGRES_DB=$POSTGRES_DB" >>'${calls}' ;;`,
        `  *"--name stack-minio "*) echo "env MINIO_ROOT_USER=$MINIO_ROOT_USER MINIO_ROOT_PASSWORD=$MINIO_ROOT_PASSWORD" >>'${calls}' ;;`,
        `  *"--name stack-mock-oauth "*) echo "env NEXT_PUBLIC_STACK_PORT_PREFIX=$NEXT_PUBLIC_STACK_PORT_PREFIX PORT=$PORT" >>'${calls}' ;;`,
        '  *"--name stack "*) echo "app: listening"; exit "$APP_STATUS" ;;',
        "esac",
      ].join("\n"),
    );
    base = {
      PATH: `${bin}:${process.env.PATH}`,
      STACK_APP_ENV: appEnv,
      STACK_RUNTIME_MOUNT: runtime,
      STACK_KEYS_DIR: join(root, "keys"),
      STACK_HOST_MOUNT: hostDir,
      STACK_IMAGES_ENV: join(cloudInitDir, "images.env"),
      APP_STATUS: "0",
    };
    await writeFile(
      join(runtime, "runtime.env"),
      "STACK_EMULATOR_PORT_PREFIX=72\nSTACK_EMULATOR_VM_DIR_HOST=\n",
    );
  });

  const start = async (env: Record<string, string> = {}, args: string[] = []) => {
    await rm(calls, { force: true });
    const r = await run(join(scripts, "run-stack-container"), args, { env: { ...base, ...env } });
    return { ...r, calls: (await readFile(calls, "utf8")).trim().split("\n") };
  };

  it("renders the env, starts the dependencies, then runs the app container in the foreground", async () => {
    const r = await start();
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toBe("app: listening\n");
    const docker = r.calls.filter((c) => c.startsWith("docker "));
    expect(r.calls.slice(0, 3)).toEqual([
      "mount-host-fs ",
      "render-stack-env",
      "docker rm --force stack stack-mock-oauth stack-inbucket stack-minio stack-postgres",
    ]);
    // Host networking, so every one serves its guest port; images pulled at build time only.
    expect(docker.slice(1, 5).map((c) => c.split(" --name ")[1]?.split(" ")[0])).toEqual([
      "stack-postgres",
      "stack-minio",
      "stack-inbucket",
      "stack-mock-oauth",
    ]);
    for (const c of docker.slice(1, 5))
      expect(c).toMatch(/^docker run --detach --rm --pull never --network host /);
    expect(docker[1]).toMatch(/ -c listen_addresses=127\.0\.0\.1$/);
    expect(docker[2]).toMatch(/ server \/data --address :9090 /);
    expect(docker[5]).toBe("docker exec stack-postgres pg_isready -q -h 127.0.0.1");
    expect(docker[6]).toBe(
      `docker run --rm --pull never --name stack --network host --add-host host.docker.internal:host-gateway --env-file ${appEnv} -v ${hostDir}:/host:rshared stack-emulator-app`,
    );
    // The credentials the app is configured with, through the environment only.
    expect(r.calls).toContain(
      "env POSTGRES_USER=postgres POSTGRES_PASSWORD=PASSWORD-PLACEHOLDER--uqfEC1hmmv POSTGRES_DB=stackframe",
    );
    expect(r.calls).toContain("env MINIO_ROOT_USER=s3mockroot MINIO_ROOT_PASSWORD=s3mockroot");
    expect(r.calls).toContain("env NEXT_PUBLIC_STACK_PORT_PREFIX=72 PORT=7214");
    expect(docker.join("\n")).not.toContain("PASSWORD-PLACEHOLDER");
    // STACK_EMULATOR_VM_DIR_HOST is empty: nothing was written to the host.
    expect(await readdir(hostDir)).toEqual([]);
  });

  it("with STACK_EMULATOR_VM_DIR_HOST, copies internal-pck and the app's output there, keeping its status", async () => {
    await mkdir(join(hostDir, "vm"));
    await writeFile(
      join(base.STACK_RUNTIME_MOUNT as string, "runtime.env"),
      "STACK_EMULATOR_PORT_PREFIX=72\nSTACK_EMULATOR_VM_DIR_HOST=/vm\n",
    );
    try {
      const r = await start({ APP_STATUS: "3" });
      expect(r.code).toBe(3);
      expect(await readFile(join(hostDir, "vm", "internal-pck"), "utf8")).toBe(
        PLACEHOLDERS.STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY,
      );
      expect((await stat(join(hostDir, "vm", "internal-pck"))).mode & 0o777).toBe(0o600);
      expect(await readFile(join(hostDir, "vm", "stack.log"), "utf8")).toBe("app: listening\n");
    } finally {
      await writeFile(
        join(base.STACK_RUNTIME_MOUNT as string, "runtime.env"),
        "STACK_EMULATOR_PORT_PREFIX=72\nSTACK_EMULATOR_VM_DIR_HOST=\n",
      );
    }
  });

  it("stops every container on --stop", async () => {
    const r = await start({}, ["--stop"]);
    expect(r.code).toBe(0);
    expect(r.calls).toEqual(["docker stop stack stack-mock-oauth stack-inbucket stack-minio stack-postgres"]);
  });
});

describe("wait-for-stack-ready", () => {
  let server: Server;
  let port: number;
  let healthRequests = 0;

  beforeAll(async () => {
    server = createServer((req, res) => {
      if (req.url === "/health?db=1") {
        healthRequests++;
        // Not ready for the first two probes, like a backend still running migrations.
        res.statusCode = healthRequests <= 2 ? 503 : 200;
      } else {
        // A redirect is not ready: the original wants 200.
        res.statusCode = req.url === "/handler/sign-in" ? 200 : 302;
      }
      res.end();
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const addr = server.address();
    port = typeof addr === "object" && addr ? addr.port : 0;
  });

  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
  });

  it("waits for the ports of the rendered env, which may appear only after it started", async () => {
    healthRequests = 0;
    const appEnv = join(dir, "ready", "local-emulator.env");
    await mkdir(join(dir, "ready"), { recursive: true });
    const waiting = run(join(scripts, "wait-for-stack-ready"), [], {
      env: { STACK_READY_TIMEOUT: "120", STACK_APP_ENV: appEnv },
    });
    await new Promise((resolve) => setTimeout(resolve, 1500));
    // The last of a name wins, as for the app.
    await writeFile(
      appEnv,
      `BACKEND_PORT=1\nDASHBOARD_PORT=1\nBACKEND_PORT=${port}\nDASHBOARD_PORT=${port}\n`,
    );
    const r = await waiting;
    expect(r.stdout).toBe("wait-for-stack-ready: ready\n");
    expect(r.code).toBe(0);
    expect(healthRequests).toBe(3);
  });

  it("gives up with the URLs that never answered 200", async () => {
    const closed = await freePort();
    const r = await run(
      join(scripts, "wait-for-stack-ready"),
      [
        `http://127.0.0.1:${port}/handler/sign-in`,
        `http://127.0.0.1:${port}/`,
        `http://127.0.0.1:${closed}/health?db=1`,
      ],
      { env: { STACK_READY_TIMEOUT: "1" } },
    );
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      `wait-for-stack-ready: not ready after 1s: http://127.0.0.1:${port}/ http://127.0.0.1:${closed}/health?db=1\n`,
    );
  });

  it("says which file it waits for when nothing rendered the env", async () => {
    const r = await run(join(scripts, "wait-for-stack-ready"), [], {
      env: { STACK_READY_TIMEOUT: "0", STACK_APP_ENV: join(dir, "nowhere.env") },
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/not ready after 0s: .*nowhere\.env, which render-stack-env writes/);
  });

  it("rejects a timeout that is not a number", async () => {
    const r = await run(join(scripts, "wait-for-stack-ready"), [], {
      env: { STACK_READY_TIMEOUT: "1; reboot" },
    });
    expect(r.code).toBe(64);
    expect(r.stderr).toMatch(/STACK_READY_TIMEOUT must be a number of seconds/);
  });
});
