// The container's start chain as the Dockerfile runs it: entrypoint.sh -> prepare-app -> the command.
import { access, mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dockerDir, PLACEHOLDERS, run } from "./harness.js";

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
      STACK_BACKEND_URL: nastyUrl,
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
      `migrate in ${join(appDir, "apps", "backend")}\nseed ${PLACEHOLDERS.STACK_PUBLISHABLE_CLIENT_KEY}\n`,
    );
    const chunk = await readFile(join(appDir, "apps", "backend", ".next", "chunk.js"), "utf8");
    expect(chunk).toBe(
      backendJs
        .replace('STACK_ENV_VAR_SENTINEL_NEXT_PUBLIC_STACK_API_URL"', `${nastyUrl}"`)
        .replace(
          "STACK_ENV_VAR_SENTINEL_NEXT_PUBLIC_STACK_PUBLISHABLE_CLIENT_KEY",
          PLACEHOLDERS.STACK_PUBLISHABLE_CLIENT_KEY,
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
    const r = await start({ STACK_BACKEND_URL: "http://other" });
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
