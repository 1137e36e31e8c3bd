// How the app container starts, run for real: entrypoint.sh (secrets) -> prepare-app (migrations, seed,
// sentinels) -> the command, as the Dockerfile chains them.
import { access, mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dockerDir, PLACEHOLDERS, randomSecrets, rotatedEnvFile, run, secretLines } from "./harness.js";

// The entrypoint must load the rotated env file on every start, refuse a damaged one, and mint a cron
// secret only when the container was started without one.
describe("entrypoint start", () => {
  let dir: string;
  let envFile: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "stack-entrypoint-"));
    envFile = join(dir, "rotated-secrets.env");
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function startEnv(env: Record<string, string>) {
    const r = await run(join(dockerDir, "entrypoint.sh"), ["env"], {
      env: { STACK_EMULATOR_LIB: join(dockerDir, "lib"), STACK_ROTATED_ENV_FILE: envFile, ...env },
    });
    const vars = Object.fromEntries(
      r.stdout
        .split("\n")
        .filter((l) => l.includes("="))
        .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
    );
    return { ...r, vars };
  }

  describe("entrypoint.sh", () => {
    it("keeps the cron secret the container was created with, and sets the mirrors from the seed names", async () => {
      // As the guest starts the container: base.env's development values first, the placeholders over them.
      const r = await startEnv({
        ...PLACEHOLDERS,
        NEXT_PUBLIC_STACK_PUBLISHABLE_CLIENT_KEY: "this-publishable-client-key-is-for-local-development-only",
        STACK_SECRET_SERVER_KEY: "this-secret-server-key-is-for-local-development-only",
        NEXT_PUBLIC_STACK_API_URL: "http://localhost:26701?a=1&b=$(x)",
      });
      expect(r.code).toBe(0);
      expect(r.vars.CRON_SECRET).toBe(PLACEHOLDERS.CRON_SECRET);
      expect(r.vars.NEXT_PUBLIC_STACK_API_URL).toBe("http://localhost:26701?a=1&b=$(x)");
      expect(r.vars.NEXT_PUBLIC_STACK_PUBLISHABLE_CLIENT_KEY).toBe(
        PLACEHOLDERS.STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY,
      );
      expect(r.vars.STACK_SECRET_SERVER_KEY).toBe(PLACEHOLDERS.STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY);
      expect(r.vars.STACK_SUPER_SECRET_ADMIN_KEY).toBe(
        PLACEHOLDERS.STACK_SEED_INTERNAL_PROJECT_SUPER_SECRET_ADMIN_KEY,
      );
    });

    it("mints a fresh cron secret when none is set", async () => {
      const a = await startEnv({});
      const b = await startEnv({});
      expect(a.vars.CRON_SECRET).toMatch(/^[0-9a-f]{64}$/);
      expect(b.vars.CRON_SECRET).toMatch(/^[0-9a-f]{64}$/);
      expect(a.vars.CRON_SECRET).not.toBe(b.vars.CRON_SECRET);
    });

    it("loads the rotated env file over the container's values on every start", async () => {
      const rotated = randomSecrets();
      await writeFile(envFile, rotatedEnvFile(rotated), { mode: 0o600 });
      for (let i = 0; i < 2; i++) {
        const r = await startEnv({ ...PLACEHOLDERS });
        expect(r.code).toBe(0);
        for (const [k, v] of Object.entries(rotated)) expect(r.vars[k]).toBe(v);
        expect(r.vars.NEXT_PUBLIC_STACK_PUBLISHABLE_CLIENT_KEY).toBe(
          rotated.STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY,
        );
        expect(r.vars.STACK_SUPER_SECRET_ADMIN_KEY).toBe(
          rotated.STACK_SEED_INTERNAL_PROJECT_SUPER_SECRET_ADMIN_KEY,
        );
      }
    });

    it("refuses to start with a damaged env file, without running it as shell", async () => {
      const marker = join(dir, "ran");
      await writeFile(envFile, `${rotatedEnvFile(randomSecrets())}$(touch ${marker})\n`, { mode: 0o600 });
      const r = await startEnv({ ...PLACEHOLDERS });
      expect(r.code).not.toBe(0);
      expect(r.stdout).toBe("");
      expect(r.stderr).toMatch(/line 8: expected KEY=value/);
      expect(r.stderr).toMatch(/refusing to start with a damaged/);
      await expect(access(marker)).rejects.toThrow();
    });

    it("refuses an env file whose mirrors disagree with the seed names", async () => {
      const rotated = randomSecrets();
      const text = rotatedEnvFile(rotated).replace(
        `STACK_SECRET_SERVER_KEY=${rotated.STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY}`,
        `STACK_SECRET_SERVER_KEY=${"1".repeat(64)}`,
      );
      await writeFile(envFile, text, { mode: 0o600 });
      const r = await startEnv({ ...PLACEHOLDERS });
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(
        /STACK_SECRET_SERVER_KEY differs from STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY/,
      );
      // Without the mirrors it is not the file rotate-secrets writes either.
      await writeFile(envFile, secretLines(rotated), { mode: 0o600 });
      const partial = await startEnv({ ...PLACEHOLDERS });
      expect(partial.code).not.toBe(0);
      expect(partial.stderr).toMatch(/NEXT_PUBLIC_STACK_PUBLISHABLE_CLIENT_KEY is missing/);
    });

    it("needs a command", async () => {
      const none = await run(join(dockerDir, "entrypoint.sh"), [], {
        env: { STACK_EMULATOR_LIB: join(dockerDir, "lib"), STACK_ROTATED_ENV_FILE: join(dir, "absent.env") },
      });
      expect(none.code).toBe(64);
      expect(none.stderr).toMatch(/usage: entrypoint.sh COMMAND/);
    });
  });
});

// The whole chain on a fixture tree of built files.
describe("prepare-app start", () => {
  let dir: string;
  let appDir: string;
  const nastyUrl = "http://localhost:26701/a?b=1&c=\\d/$(touch PWNED)`id`";

  const backendJs = [
    'const api="STACK_ENV_VAR_SENTINEL_NEXT_PUBLIC_STACK_API_URL";',
    'const ws="STACK_ENV_VAR_SENTINEL_NEXT_PUBLIC_STACK_API_URL_WS";',
    'const k="STACK_ENV_VAR_SENTINEL_NEXT_PUBLIC_STACK_PUBLISHABLE_CLIENT_KEY";',
    "",
  ].join("\n");

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "stack-prepare-"));
    appDir = join(dir, "app");
    await mkdir(join(appDir, "apps", "backend", ".next"), { recursive: true });
    await mkdir(join(appDir, "apps", "dashboard"), { recursive: true });
    await writeFile(join(appDir, "apps", "backend", ".next", "chunk.js"), backendJs, { mode: 0o640 });
    await writeFile(
      join(appDir, "apps", "dashboard", "page.html"),
      "<a href='STACK_ENV_VAR_SENTINEL_NEXT_PUBLIC_STACK_API_URL'>",
    );
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const start = (env: Record<string, string> = {}) =>
    run(join(dockerDir, "entrypoint.sh"), [join(dockerDir, "prepare-app"), "sh", "-c", "echo started"], {
      cwd: dir,
      env: {
        ...PLACEHOLDERS,
        STACK_EMULATOR_LIB: join(dockerDir, "lib"),
        STACK_ROTATED_ENV_FILE: join(dir, "rotated.env"),
        STACK_APP_DIR: appDir,
        NEXT_PUBLIC_STACK_API_URL: nastyUrl,
        STACK_MIGRATE_COMMAND: `echo "migrate in $PWD" >>'${join(dir, "steps")}'`,
        STACK_SEED_COMMAND: `echo "seed $STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY" >>'${join(dir, "steps")}'`,
        ...env,
      },
    });

  describe("prepare-app", () => {
    it("migrates, seeds with the current keys, fills in the sentinels literally, then runs the command", async () => {
      const r = await start();
      expect(r.stderr).toBe("");
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/running migrations\n.*running the seed\nstarted\n$/s);
      expect(await readFile(join(dir, "steps"), "utf8")).toBe(
        `migrate in ${join(appDir, "apps", "backend")}\nseed ${PLACEHOLDERS.STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY}\n`,
      );
      const chunk = await readFile(join(appDir, "apps", "backend", ".next", "chunk.js"), "utf8");
      expect(chunk).toBe(
        backendJs
          .replace('STACK_ENV_VAR_SENTINEL_NEXT_PUBLIC_STACK_API_URL"', `${nastyUrl}"`)
          .replace(
            "STACK_ENV_VAR_SENTINEL_NEXT_PUBLIC_STACK_PUBLISHABLE_CLIENT_KEY",
            PLACEHOLDERS.STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY,
          ),
      );
      // A longer sentinel sharing the prefix is not touched, and one without a value stays for a later start.
      expect(chunk).toContain("STACK_ENV_VAR_SENTINEL_NEXT_PUBLIC_STACK_API_URL_WS");
      expect((await stat(join(appDir, "apps", "backend", ".next", "chunk.js"))).mode & 0o777).toBe(0o640);
      expect(await readFile(join(appDir, "apps", "dashboard", "page.html"), "utf8")).toBe(
        `<a href='${nastyUrl}'>`,
      );
      await expect(access(join(dir, "PWNED"))).rejects.toThrow();
    });

    it("leaves the already prepared files alone on a later start", async () => {
      const file = join(appDir, "apps", "dashboard", "page.html");
      const before = await stat(file);
      const r = await start({ NEXT_PUBLIC_STACK_API_URL: "http://other" });
      expect(r.code).toBe(0);
      expect((await stat(file)).mtimeMs).toBe(before.mtimeMs);
      expect(await readFile(file, "utf8")).toBe(`<a href='${nastyUrl}'>`);
    });

    it("stops the start when a migration fails", async () => {
      const r = await start({ STACK_MIGRATE_COMMAND: "exit 3" });
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/prepare-app: running migrations failed/);
      expect(r.stdout).not.toContain("started");
    });
  });
});
