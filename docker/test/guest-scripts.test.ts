// The guest-side scripts of the real image (guest/cloud-init/scripts), run on the host against real ISO images
// and real HTTP servers.

import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  cloudInitDir,
  dockerDir,
  freePort,
  mustRun,
  PLACEHOLDERS,
  run,
  secretLines,
  writeExecutable,
} from "./harness.js";

const scripts = join(cloudInitDir, "scripts");
const canUseLoopDevices = process.getuid?.() === 0 && existsSync("/dev/loop-control");
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "stack-guest-"));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

let isoCount = 0;
/** A config disk as the host makes it: an ISO 9660 image with Joliet and Rock Ridge names. */
async function configIso(stackEnv: string, volumeId = "STACKCFG", fileName = "stack.env"): Promise<string> {
  isoCount++;
  const src = join(dir, `iso-src-${isoCount}`);
  await mkdir(src);
  await writeFile(join(src, fileName), stackEnv);
  const iso = join(dir, `config-${isoCount}.iso`);
  await mustRun("xorriso", ["-as", "mkisofs", "-quiet", "-V", volumeId, "-J", "-R", "-o", iso, src]);
  return iso;
}

function guestEnv(name: string, device: string) {
  return {
    PATH: `${scripts}:${process.env.PATH}`,
    STACK_EMULATOR_LIB: join(dockerDir, "lib"),
    STACK_CONFIG_DEVICE: device,
    STACK_EMULATOR_SECRETS_FILE: join(dir, name, "secrets.env"),
    STACK_EMULATOR_APP_ENV: join(dir, name, "app.env"),
  };
}

const renderStackEnv = (env: Record<string, string>) => run(join(scripts, "render-stack-env"), [], { env });

describe("render-stack-env", () => {
  const config = "STACK_BACKEND_URL=http://localhost:26701\nSTACK_DASHBOARD_URL=http://localhost:26700\n";

  // Needs a loop device, so root and /dev/loop-control (as on the CI machine).
  it.runIf(canUseLoopDevices)(
    "finds the config disk by its label among the block devices, as in the guest",
    async () => {
      // A label of its own, so that no other disk on this machine can answer to it.
      const label = `T${randomBytes(6).toString("hex").toUpperCase()}`;
      const iso = await configIso(config, label);
      const device = (await mustRun("losetup", ["--find", "--show", "--read-only", iso])).trim();
      try {
        const { STACK_CONFIG_DEVICE: _, ...env } = guestEnv("by-label", iso);
        const r = await renderStackEnv({ ...env, STACK_CONFIG_LABEL: label });
        expect(r.stderr).toBe("");
        expect(r.stdout).toBe("changed\n");
        expect(device).toMatch(/^\/dev\/loop\d+$/);
        expect(await readFile(env.STACK_EMULATOR_APP_ENV, "utf8")).toContain(
          "STACK_BACKEND_URL=http://localhost:26701\n",
        );
      } finally {
        await mustRun("losetup", ["--detach", device]);
      }
    },
  );

  it("says so when no disk has the label", async () => {
    const label = `T${randomBytes(6).toString("hex").toUpperCase()}`;
    const env = guestEnv("no-disk", await configIso(config));
    const r = await renderStackEnv({ ...env, STACK_CONFIG_DEVICE: "", STACK_CONFIG_LABEL: label });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      `render-stack-env: no disk labelled ${label} is attached; the host must attach the runtime config ISO\n`,
    );
  });

  it("bakes the public placeholders into an image built for snapshots", async () => {
    const env = guestEnv("snapshot", await configIso(`# build\n${config}STACK_EMULATOR_BUILD_SNAPSHOT=1\n`));
    const r = await renderStackEnv(env);
    expect(r.stderr).toBe("");
    expect(r.stdout).toBe("changed\n");
    expect(await readFile(env.STACK_EMULATOR_SECRETS_FILE, "utf8")).toBe(secretLines(PLACEHOLDERS));
    expect(await readFile(env.STACK_EMULATOR_APP_ENV, "utf8")).toBe(
      `STACK_BACKEND_URL=http://localhost:26701\nSTACK_DASHBOARD_URL=http://localhost:26700\nSTACK_EMULATOR_BUILD_SNAPSHOT=1\n${secretLines(PLACEHOLDERS)}`,
    );
    for (const f of [env.STACK_EMULATOR_SECRETS_FILE, env.STACK_EMULATOR_APP_ENV]) {
      expect((await stat(f)).mode & 0o777).toBe(0o600);
    }
  });

  it("mints random secrets otherwise, keeps them, and rewrites only on a config change", async () => {
    const env = guestEnv("random", await configIso(config));
    expect((await renderStackEnv(env)).stdout).toBe("changed\n");
    const secrets = await readFile(env.STACK_EMULATOR_SECRETS_FILE, "utf8");
    expect(secrets).toMatch(
      /^STACK_PUBLISHABLE_CLIENT_KEY=[0-9a-f]{64}\nSTACK_SECRET_SERVER_KEY=[0-9a-f]{64}\nSTACK_SUPER_SECRET_ADMIN_KEY=[0-9a-f]{64}\nCRON_SECRET=[0-9a-f]{64}\n$/,
    );
    expect(secrets).not.toContain(PLACEHOLDERS.CRON_SECRET);

    const inode = (await stat(env.STACK_EMULATOR_APP_ENV)).ino;
    expect((await renderStackEnv(env)).stdout).toBe("unchanged\n");
    expect((await stat(env.STACK_EMULATOR_APP_ENV)).ino).toBe(inode);

    const moved = { ...env, STACK_CONFIG_DEVICE: await configIso(config.replace("26701", "36701")) };
    expect((await renderStackEnv(moved)).stdout).toBe("changed\n");
    const appEnv = await readFile(env.STACK_EMULATOR_APP_ENV, "utf8");
    expect(appEnv).toContain("STACK_BACKEND_URL=http://localhost:36701\n");
    expect(appEnv.endsWith(secrets)).toBe(true);
  });

  it("uses the secrets trigger-fast-rotate recorded", async () => {
    const env = guestEnv("rotated", await configIso(config));
    await mkdir(join(dir, "rotated"));
    const rotated = { ...PLACEHOLDERS, CRON_SECRET: "12".repeat(32) };
    await writeFile(env.STACK_EMULATOR_SECRETS_FILE, secretLines(rotated), { mode: 0o600 });
    expect((await renderStackEnv(env)).code).toBe(0);
    expect(await readFile(env.STACK_EMULATOR_APP_ENV, "utf8")).toContain(`CRON_SECRET=${"12".repeat(32)}\n`);
  });

  const rejected: [string, () => Promise<string>, RegExp][] = [
    ["a disk with another label", () => configIso(config, "CIDATA"), /is not labelled STACKCFG/],
    ["a disk without stack.env", () => configIso(config, "STACKCFG", "other.env"), /has no stack.env/],
    [
      "a key outside STACK_*",
      () => configIso(`${config}LD_PRELOAD=/tmp/x.so\n`),
      /line 3: expected STACK_NAME=value/,
    ],
    [
      "a secret on the config disk",
      () => configIso(`STACK_SECRET_SERVER_KEY=${"a".repeat(64)}\n`),
      /is a secret/,
    ],
    ["a control character", () => configIso("STACK_BACKEND_URL=http://x\x1b[2J\n"), /control characters/],
    [
      "a value compose would interpolate",
      () => configIso("STACK_BACKEND_URL=http://x/$HOME\n"),
      /contains one of \$/,
    ],
    ["a key given twice", () => configIso(`${config}STACK_BACKEND_URL=http://y\n`), /given twice/],
  ];

  let accepted: ReturnType<typeof guestEnv>;
  let acceptedAppEnv: string;
  beforeAll(async () => {
    accepted = guestEnv("rejected", await configIso(config));
    await renderStackEnv(accepted);
    acceptedAppEnv = await readFile(accepted.STACK_EMULATOR_APP_ENV, "utf8");
  });

  it.each(rejected)("rejects %s and changes nothing", async (_name, device, message) => {
    const r = await renderStackEnv({ ...accepted, STACK_CONFIG_DEVICE: await device() });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(message);
    expect(await readFile(accepted.STACK_EMULATOR_APP_ENV, "utf8")).toBe(acceptedAppEnv);
  });
});

describe("apply-runtime-config", () => {
  it("recreates the containers only when the environment changed", async () => {
    const log = join(dir, "compose-calls");
    const compose = join(dir, "compose");
    await writeExecutable(compose, `#!/bin/sh\nprintf '%s\\n' "$*" >>'${log}'\n`);
    const env = {
      ...guestEnv("apply", await configIso("STACK_BACKEND_URL=http://a\n")),
      STACK_COMPOSE: compose,
    };
    const apply = (e: Record<string, string>) => run(join(scripts, "apply-runtime-config"), [], { env: e });

    expect((await apply(env)).stdout).toBe("apply-runtime-config: config changed\n");
    expect(await readFile(log, "utf8")).toBe("up --detach --no-build\n");
    expect((await apply(env)).stdout).toBe("apply-runtime-config: config unchanged\n");
    expect(await readFile(log, "utf8")).toBe("up --detach --no-build\n");

    const bad = await apply({ ...env, STACK_CONFIG_DEVICE: await configIso("nonsense\n") });
    expect(bad.code).not.toBe(0);
    expect(await readFile(log, "utf8")).toBe("up --detach --no-build\n");
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
        res.statusCode = req.url === "/handler/sign-in" ? 200 : 404;
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

  it("waits until every URL answers 2xx", async () => {
    const r = await run(
      join(scripts, "wait-for-stack-ready"),
      [`http://127.0.0.1:${port}/health?db=1`, `http://127.0.0.1:${port}/handler/sign-in`],
      { env: { STACK_READY_TIMEOUT: "120" } },
    );
    expect(r.stdout).toBe("wait-for-stack-ready: ready\n");
    expect(r.code).toBe(0);
    expect(healthRequests).toBe(3);
  });

  it("gives up with the URLs that never answered", async () => {
    const closed = await freePort();
    const r = await run(
      join(scripts, "wait-for-stack-ready"),
      [`http://127.0.0.1:${port}/handler/sign-in`, `http://127.0.0.1:${closed}/health?db=1`],
      { env: { STACK_READY_TIMEOUT: "1" } },
    );
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      `wait-for-stack-ready: not ready after 1s: http://127.0.0.1:${closed}/health?db=1\n`,
    );
  });

  it("rejects a timeout that is not a number", async () => {
    const r = await run(join(scripts, "wait-for-stack-ready"), [], {
      env: { STACK_READY_TIMEOUT: "1; reboot" },
    });
    expect(r.code).toBe(64);
    expect(r.stderr).toMatch(/STACK_READY_TIMEOUT must be a number of seconds/);
  });
});
