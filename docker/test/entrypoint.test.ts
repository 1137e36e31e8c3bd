// The entrypoint, run for real: it must load the rotated env file on every start, refuse a damaged one, and
// mint a cron secret only when the container was started without one.
import { access, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dockerDir, PLACEHOLDERS, randomSecrets, run, secretLines } from "./harness.js";

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
  it("keeps the cron secret the container was created with", async () => {
    const r = await startEnv({ ...PLACEHOLDERS, STACK_BACKEND_URL: "http://localhost:26701?a=1&b=$(x)" });
    expect(r.code).toBe(0);
    expect(r.vars.CRON_SECRET).toBe(PLACEHOLDERS.CRON_SECRET);
    expect(r.vars.NEXT_PUBLIC_STACK_API_URL).toBe("http://localhost:26701?a=1&b=$(x)");
    expect(r.vars.NEXT_PUBLIC_BROWSER_STACK_API_URL).toBe("http://localhost:26701?a=1&b=$(x)");
    expect(r.vars.NEXT_PUBLIC_STACK_DASHBOARD_URL).toBeUndefined();
    expect(r.vars.NEXT_PUBLIC_STACK_PUBLISHABLE_CLIENT_KEY).toBe(PLACEHOLDERS.STACK_PUBLISHABLE_CLIENT_KEY);
    expect(r.vars.STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY).toBe(PLACEHOLDERS.STACK_SECRET_SERVER_KEY);
    expect(r.vars.STACK_SEED_INTERNAL_PROJECT_SUPER_SECRET_ADMIN_KEY).toBe(
      PLACEHOLDERS.STACK_SUPER_SECRET_ADMIN_KEY,
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
    await writeFile(envFile, secretLines(rotated), { mode: 0o600 });
    for (let i = 0; i < 2; i++) {
      const r = await startEnv({ ...PLACEHOLDERS });
      expect(r.code).toBe(0);
      for (const [k, v] of Object.entries(rotated)) expect(r.vars[k]).toBe(v);
      expect(r.vars.STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY).toBe(
        rotated.STACK_PUBLISHABLE_CLIENT_KEY,
      );
    }
  });

  it("refuses to start with a damaged env file, without running it as shell", async () => {
    const marker = join(dir, "ran");
    await writeFile(envFile, `${secretLines(randomSecrets())}$(touch ${marker})\n`, { mode: 0o600 });
    const r = await startEnv({ ...PLACEHOLDERS });
    expect(r.code).not.toBe(0);
    expect(r.stdout).toBe("");
    expect(r.stderr).toMatch(/line 5: expected KEY=value/);
    expect(r.stderr).toMatch(/refusing to start with a damaged/);
    await expect(access(marker)).rejects.toThrow();
  });

  it("needs a command", async () => {
    const none = await run(join(dockerDir, "entrypoint.sh"), [], {
      env: { STACK_EMULATOR_LIB: join(dockerDir, "lib"), STACK_ROTATED_ENV_FILE: join(dir, "absent.env") },
    });
    expect(none.code).toBe(64);
    expect(none.stderr).toMatch(/usage: entrypoint.sh COMMAND/);
  });
});
