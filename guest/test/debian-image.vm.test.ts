import { execFileSync } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { QgaClient } from "@stack/qga";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  apiStatus,
  expectKeysReplaced,
  freePorts,
  type Instance,
  keysOf,
  placeholderPublishableKey,
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
// The image bakes the same public placeholders as the dev image (render-stack-env for snapshot builds).
const PLACEHOLDER_PUBLISHABLE_KEY = placeholderPublishableKey();

async function cli(inst: Instance, args: string[]) {
  const result = await runCli([...args, "--json"], inst.env, { timeoutMs: CLI_TIMEOUT });
  expect(result.code, result.stderr).toBe(0);
  return result.json;
}

/** Runs a query as the postgres superuser inside the guest, through the guest agent. */
async function guestQuery(socketDir: string, sql: string): Promise<string> {
  const qga = await QgaClient.connect(join(socketDir, "qga.sock"), { timeoutMs: 15_000 });
  try {
    const result = await qga.exec(
      {
        path: "/usr/sbin/runuser",
        args: ["-u", "postgres", "--", "psql", "-X", "-A", "-t", "-d", "stackframe", "-c", sql],
        captureOutput: true,
      },
      { timeoutMs: 30_000 },
    );
    expect(result.exitCode, result.stderr.toString()).toBe(0);
    return result.stdout.toString().trim();
  } finally {
    await qga.close();
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

    it(
      "captures, resumes with fresh keys checked by PostgreSQL, keeps data across stop/start, and reset gives new keys",
      async () => {
        const { backend, dashboard, minio, inbucket } = await freePorts([
          "backend",
          "dashboard",
          "minio",
          "inbucket",
        ] as const);
        const home = tempHome("se-deb-");
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
            STACK_EMULATOR_DASHBOARD_PORT: String(dashboard),
            STACK_EMULATOR_BACKEND_PORT: String(backend),
            CI: "1",
          },
        };
        try {
          const first = await cli(inst, ["start"]);
          expect(first.boot).toBe("snapshot");
          expect(first.rotation).toBe("rotated");
          const keys = keysOf(inst);
          expect(await apiStatus(inst, keys.STACK_PUBLISHABLE_CLIENT_KEY as string)).toBe(200);
          expect(await apiStatus(inst, PLACEHOLDER_PUBLISHABLE_KEY)).toBe(401);
          // The key the backend accepted is the one rotate-secrets wrote into PostgreSQL.
          expect(await guestQuery(first.socketDir, 'SELECT "publishableClientKey" FROM "ApiKeySet"')).toBe(
            keys.STACK_PUBLISHABLE_CLIENT_KEY,
          );
          const dashboardScript = await (await fetch(`http://127.0.0.1:${dashboard}/static/app.js`)).text();
          expect(dashboardScript).toContain(keys.STACK_PUBLISHABLE_CLIENT_KEY);
          expect(dashboardScript).not.toContain(PLACEHOLDER_PUBLISHABLE_KEY);
          const config = (await (await fetch(`http://127.0.0.1:${backend}/api/v1/config`)).json()) as Record<
            string,
            string
          >;
          expect(config.STACK_DASHBOARD_URL).toBe(`http://127.0.0.1:${dashboard}`);

          const put = await fetch(`http://127.0.0.1:${backend}/api/v1/kv/note`, {
            method: "POST",
            body: "kept across stop",
            headers: { "x-stack-publishable-client-key": keys.STACK_PUBLISHABLE_CLIENT_KEY as string },
          });
          expect(put.status).toBe(200);
          expect((await cli(inst, ["stop"])).saved).toBe(true);

          const resumed = await cli(inst, ["start"]);
          expect(resumed.boot).toBe("quick-boot");
          expect(keysOf(inst)).toEqual(keys);
          const get = await fetch(`http://127.0.0.1:${backend}/api/v1/kv/note`, {
            headers: { "x-stack-publishable-client-key": keys.STACK_PUBLISHABLE_CLIENT_KEY as string },
          });
          expect(await get.text()).toBe("kept across stop");
          expect(
            await guestQuery(resumed.socketDir, `SELECT convert_from("value", 'UTF8') FROM "KeyValue"`),
          ).toBe("kept across stop");

          await cli(inst, ["reset"]);
          const fresh = await cli(inst, ["start"]);
          expect(fresh.boot).toBe("snapshot");
          const newKeys = await expectKeysReplaced(inst, keys);
          const gone = await fetch(`http://127.0.0.1:${backend}/api/v1/kv/note`, {
            headers: { "x-stack-publishable-client-key": newKeys.STACK_PUBLISHABLE_CLIENT_KEY as string },
          });
          expect(gone.status).toBe(404);
        } finally {
          await runCli(["stop", "--no-save"], inst.env, { timeoutMs: CLI_TIMEOUT });
        }
      },
      TEST_TIMEOUT,
    );
  },
);
