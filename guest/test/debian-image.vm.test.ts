import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { QgaClient } from "@stack/qga";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  appLogScript,
  PLACEHOLDER_PUBLISHABLE_KEY,
} from "../../packages/emulator-cli/src/contract/contract.js";
import {
  freePort,
  freePorts,
  type Instance,
  instanceFiles,
  keysOf,
  removeTempHomes,
  runCli,
  tempHome,
} from "../../packages/emulator-cli/test/helpers.js";

// The realistic image: a minutes-long build (mmdebstrap, then a provisioning boot under TCG) and a 2 GiB guest
// that cold boots systemd, PostgreSQL and Node.js under TCG. Too long for every test run: opt in.
// biome-ignore lint/suspicious/noUndeclaredEnvVars: a switch for this file, read by vitest, not a turbo task input
const enabled = process.env.STACK_EMULATOR_TEST_DEBIAN_IMAGE === "1";
const BUILD_TIMEOUT = 3_600_000;
const TEST_TIMEOUT = 3_600_000;
const CLI_TIMEOUT = 1_200_000;
const GUEST = join(import.meta.dirname, "..");
const PCK = "STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY";

async function cli(inst: Instance, args: string[]) {
  const result = await runCli([...args, "--json"], inst.env, { timeoutMs: CLI_TIMEOUT });
  expect(result.code, result.stderr).toBe(0);
  return result.json;
}

/** A request to the backend as a client of a project (docs/guest-contract.md, section 5: x-stack-access-type). */
async function asClient(backend: number, path: string, key: string, init: RequestInit = {}) {
  return fetch(`http://127.0.0.1:${backend}${path}`, {
    ...init,
    headers: {
      "x-stack-project-id": "internal",
      "x-stack-access-type": "client",
      "x-stack-publishable-client-key": key,
      ...init.headers,
    },
  });
}
const keyStatus = async (backend: number, key: string) =>
  (await asClient(backend, "/api/v1/projects/current", key)).status;

/** A command in the guest through the agent, as the CLI runs its guest commands; its stdout. */
async function guestExec(socketDir: string, path: string, args: string[]): Promise<string> {
  const qga = await QgaClient.connect(join(socketDir, "qga.sock"), { timeoutMs: 15_000 });
  try {
    const result = await qga.exec({ path, args, captureOutput: true }, { timeoutMs: 60_000 });
    expect(result.exitCode, result.stderr.toString()).toBe(0);
    return result.stdout.toString().trim();
  } finally {
    await qga.close();
  }
}

/** Runs a query as the postgres superuser inside the guest, on the app's database. */
const guestQuery = (socketDir: string, sql: string) =>
  guestExec(socketDir, "/usr/sbin/runuser", [
    "-u",
    "postgres",
    "--",
    "psql",
    "-X",
    "-A",
    "-t",
    "-d",
    "stackframe",
    "-c",
    sql,
  ]);

async function eventually<T>(
  probe: () => Promise<T | undefined>,
  what: string,
  timeoutMs = 60_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

describe.skipIf(!enabled)(
  "the realistic Debian image (opt in with STACK_EMULATOR_TEST_DEBIAN_IMAGE=1: a build of minutes and TCG boots of a 2 GiB systemd guest)",
  () => {
    let imageDir = "";
    beforeAll(() => {
      const out = join(tmpdir(), "stack-emulator-test-images", "debian");
      const json = execFileSync(join(GUEST, "build-debian-image"), ["--out", out, "--json"], {
        encoding: "utf8",
        stdio: ["ignore", "pipe", "inherit"],
      });
      imageDir = JSON.parse(json.trim().split("\n").pop() as string).path;
    }, BUILD_TIMEOUT);
    afterAll(removeTempHomes);

    it("has a schema 2 manifest: the machine and its boot, nothing of the contract", () => {
      const manifest = JSON.parse(readFileSync(join(imageDir, "image.json"), "utf8"));
      expect(Object.keys(manifest).sort()).toEqual(
        [
          "arch",
          "boot",
          "cpus",
          "digest",
          "disk",
          "memoryMiB",
          "name",
          "packages",
          "schema",
          "timeoutSeconds",
        ].sort(),
      );
      expect(manifest).toMatchObject({
        schema: 2,
        arch: "amd64",
        boot: { kernel: "vmlinuz", initrd: "initrd.img" },
        timeoutSeconds: 120,
      });
    });

    it(
      "speaks the guest contract: rotation checked by PostgreSQL, a config file's project and edits, data across stop/start, new host ports re-applied, new keys after reset",
      async () => {
        const { backend, dashboard, minio, inbucket } = await freePorts([
          "backend",
          "dashboard",
          "minio",
          "inbucket",
        ] as const);
        const home = tempHome("se-deb-");
        const project = join(home, "app");
        mkdirSync(project);
        writeFileSync(
          join(project, "package.json"),
          JSON.stringify({ dependencies: { "@stackframe/stack": "*" } }),
        );
        const configFile = join(project, "stack.config.ts");
        writeFileSync(configFile, "");
        const inst: Instance = {
          home,
          backend,
          dashboard,
          minio,
          inbucket,
          env: {
            ...process.env,
            STACK_EMULATOR_MINIO_PORT: String(minio),
            STACK_EMULATOR_INBUCKET_PORT: String(inbucket),
            STACK_EMULATOR_HOME: home,
            STACK_EMULATOR_IMAGE: imageDir,
            // This machine's /dev/kvm cannot boot a stock kernel (see shared/reference/qemu.md).
            EMULATOR_ACCEL: "tcg",
            // A cold boot of systemd, PostgreSQL and two Node.js servers under TCG on a loaded machine.
            STACK_EMULATOR_BOOT_TIMEOUT: "900",
            // The original's names for the host ports, as a user of its CLI sets them.
            EMULATOR_DASHBOARD_PORT: String(dashboard),
            EMULATOR_BACKEND_PORT: String(backend),
            CI: "1",
          },
        };
        try {
          const first = await cli(inst, ["start"]);
          expect(first.boot).toBe("snapshot");
          expect(first.rotation).toBe("rotated");
          const keys = keysOf(inst);
          const pck = keys[PCK] as string;
          expect(await keyStatus(backend, pck)).toBe(200);
          expect(await keyStatus(backend, PLACEHOLDER_PUBLISHABLE_KEY)).toBe(401);
          // The key the backend accepted is the one rotate-secrets wrote into PostgreSQL and the host keeps.
          expect(
            await guestQuery(
              first.socketDir,
              `SELECT "publishableClientKey" FROM "ApiKeySet" WHERE id = '3142e763-b230-44b5-8636-aa62f7489c26'`,
            ),
          ).toBe(pck);
          expect(readFileSync(instanceFiles(home).internalPck, "utf8")).toBe(pck);
          const dashboardScript = await (await fetch(`http://127.0.0.1:${dashboard}/static/app.js`)).text();
          expect(dashboardScript).toContain(pck);
          expect(dashboardScript).not.toContain(PLACEHOLDER_PUBLISHABLE_KEY);
          // What render-stack-env computed from the config disk: browser URLs on the host ports, the prefix's ports.
          const config = (await (await fetch(`http://127.0.0.1:${backend}/api/v1/config`)).json()) as Record<
            string,
            string
          >;
          expect(config.NEXT_PUBLIC_STACK_DASHBOARD_URL).toBe(`http://localhost:${dashboard}`);
          expect(config.NEXT_PUBLIC_STACK_API_URL).toBe(`http://localhost:${backend}`);
          expect(config.BACKEND_PORT).toBe("8102");
          expect(config.STACK_DATABASE_CONNECTION_STRING).toBeUndefined();
          // The app's own output is the journal of stack.service.
          expect(await guestExec(first.socketDir, "/bin/sh", ["-c", appLogScript(200)])).toMatch(
            /backend: listening on 8102/,
          );

          // The original CLI's request for a config file's project, answered from the file at /host<path>.
          const configProject = await cli(inst, ["start", "--config-file", configFile]);
          expect(configProject.project_id).toMatch(/^[0-9a-f-]{36}$/);
          // The backend wrote the default config into the empty file; the share's sync copies it out to the host.
          await eventually(
            async () =>
              readFileSync(configFile, "utf8") ===
              'import type { StackConfig } from "@stackframe/stack";\n\nexport const config: StackConfig = {};\n'
                ? true
                : undefined,
            "the default config, with the import of the nearest package.json, in the host file",
          );
          const branch = (init: RequestInit = {}) =>
            fetch(`http://127.0.0.1:${backend}/api/v1/internal/config/override/branch`, {
              ...init,
              headers: {
                "x-stack-project-id": configProject.project_id,
                "x-stack-access-type": "server",
                "x-stack-secret-server-key": configProject.secret_server_key,
                "content-type": "application/json",
              },
            });
          // A dashboard edit reaches the host file, rendered as the backend renders it.
          const edit = await branch({
            method: "PATCH",
            body: JSON.stringify({ config_override_string: JSON.stringify({ "auth.allowSignUp": false }) }),
          });
          expect(edit.status).toBe(200);
          await eventually(
            async () =>
              readFileSync(configFile, "utf8").includes('"allowSignUp": false') ? true : undefined,
            "the dashboard's edit in the host file",
          );
          // A host edit reaches the backend.
          writeFileSync(configFile, 'export const config = {"teams": {"allowClientTeamCreation": true}};\n');
          await eventually(async () => {
            const body = (await (await branch()).json()) as { config_string: string };
            return JSON.parse(body.config_string).teams?.allowClientTeamCreation === true ? true : undefined;
          }, "the host's edit in the backend");

          const put = await asClient(backend, "/api/v1/kv/note", pck, {
            method: "POST",
            body: "kept across stop",
          });
          expect(put.status).toBe(200);
          expect((await cli(inst, ["stop"])).saved).toBe(true);

          const resumed = await cli(inst, ["start"]);
          expect(resumed.boot).toBe("quick-boot");
          expect(keysOf(inst)).toEqual(keys);
          expect(await (await asClient(backend, "/api/v1/kv/note", pck)).text()).toBe("kept across stop");
          expect(
            await guestQuery(resumed.socketDir, `SELECT convert_from("value", 'UTF8') FROM "KeyValue"`),
          ).toBe("kept across stop");

          // Resumed on other host ports: the CLI restarts stack.service, which renders the new config disk and
          // starts the app on the placeholders again (rotate-secrets --reset, the seed); then it rotates.
          expect((await cli(inst, ["stop"])).saved).toBe(true);
          const moved = await freePort();
          const movedEnv = { ...inst.env, EMULATOR_BACKEND_PORT: String(moved) };
          const elsewhere = await cli({ ...inst, backend: moved, env: movedEnv }, ["start"]);
          expect(elsewhere.boot).toBe("quick-boot");
          const movedPck = keysOf(inst)[PCK] as string;
          expect(movedPck).not.toBe(pck);
          expect(await keyStatus(moved, movedPck)).toBe(200);
          expect(await keyStatus(moved, pck)).toBe(401);
          expect(await keyStatus(moved, PLACEHOLDER_PUBLISHABLE_KEY)).toBe(401);
          const movedConfig = (await (
            await fetch(`http://127.0.0.1:${moved}/api/v1/config`)
          ).json()) as Record<string, string>;
          expect(movedConfig.NEXT_PUBLIC_STACK_API_URL).toBe(`http://localhost:${moved}`);
          const movedScript = await (await fetch(`http://127.0.0.1:${dashboard}/static/app.js`)).text();
          expect(movedScript).toContain(movedPck);
          expect(await (await asClient(moved, "/api/v1/kv/note", movedPck)).text()).toBe("kept across stop");

          await cli(inst, ["reset"]);
          const fresh = await cli(inst, ["start"]);
          expect(fresh.boot).toBe("snapshot");
          const newKeys = keysOf(inst);
          const newPck = newKeys[PCK] as string;
          expect(newPck).not.toBe(movedPck);
          expect(await keyStatus(backend, newPck)).toBe(200);
          expect(await keyStatus(backend, movedPck)).toBe(401);
          expect(await keyStatus(backend, PLACEHOLDER_PUBLISHABLE_KEY)).toBe(401);
          expect((await asClient(backend, "/api/v1/kv/note", newPck)).status).toBe(404);
        } finally {
          await runCli(["stop", "--no-save"], inst.env, { timeoutMs: CLI_TIMEOUT });
        }
      },
      TEST_TIMEOUT,
    );
  },
);
