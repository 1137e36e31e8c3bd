// rotate-secrets against a real PostgreSQL, a real supervisord running the shipped config (programs whose
// children hold TCP ports), and a tree of built files; trigger-fast-rotate handing off to it.
import { readFileSync } from "node:fs";
import { access, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type AppAnswer,
  askApp,
  cloudInitDir,
  dockerDir,
  eventually,
  PLACEHOLDERS,
  type Postgres,
  postgresBinDir,
  randomSecrets,
  rotatedEnvFile,
  run,
  type Secrets,
  type Supervisor,
  secretLines,
  startPostgres,
  startSupervisor,
  writeExecutable,
} from "./harness.js";

const KEY_SET_ID = "3142e763-b230-44b5-8636-aa62f7489c26";
const OTHER_KEY_SET_ID = "9b0c7d4e-1111-4222-8333-444455556666";
const OTHER_KEYS = { pck: "a".repeat(64), ssk: "b".repeat(64), sak: "c".repeat(64) };
// The rotation's input names (docs/guest-contract.md, section 2).
const PCK = "STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY";
const SSK = "STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY";
const SAK = "STACK_SEED_INTERNAL_PROJECT_SUPER_SECRET_ADMIN_KEY";

let pg: Postgres;
let sup: Supervisor;
let dir: string;
let jsDir: string;
let rotateEnv: Record<string, string>;
let envFile: string;

async function readTree(root: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const entry of await readdir(root, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const path = join(entry.parentPath, entry.name);
    out.set(path.slice(root.length + 1), await readFile(path, "utf8"));
  }
  return out;
}

async function keyRows(): Promise<string[]> {
  const out = await pg.sql(
    `SELECT "id", "publishableClientKey", "secretServerKey", "superSecretAdminKey", "updatedAt" FROM "ApiKeySet" ORDER BY "id";`,
  );
  return out.trim().split("\n");
}

async function apps(): Promise<{ backend: AppAnswer; dashboard: AppAnswer }> {
  return { backend: await askApp(sup.ports.backend), dashboard: await askApp(sup.ports.dashboard) };
}

/** Waits until both programs answer from processes that hold `pck`. */
async function appsWithKey(pck: string) {
  return eventually(async () => {
    const a = await apps();
    return a.backend.publishableClientKey === pck && a.dashboard.publishableClientKey === pck ? a : undefined;
  }, `both programs to answer with the new key`);
}

/**
 * Whether a process still runs. A zombie (exited, not yet reaped) does not: where pid 1 is slow to reap orphans,
 * as in some containers and CI sandboxes, an exited child stays a zombie, and `kill(pid, 0)` still succeeds.
 */
function isAlive(pid: number): boolean {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return false;
  }
  const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
  return state !== "Z" && state !== "X";
}

async function snapshot() {
  return {
    rows: await keyRows(),
    tree: await readTree(jsDir),
    apps: await apps(),
    envFile: await readFile(envFile, "utf8").catch(() => null),
  };
}

const rotate = (input: string, env: Record<string, string> = {}) =>
  run(join(dockerDir, "rotate-secrets"), [], { env: { ...rotateEnv, ...env }, input });

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "stack-rotate-"));
  jsDir = join(dir, "app");
  const baked = PLACEHOLDERS[PCK];
  await mkdir(join(jsDir, ".next", "static", "chunks", "app"), { recursive: true });
  await mkdir(join(jsDir, "apps", "backend"), { recursive: true });
  await writeFile(
    join(jsDir, ".next", "static", "chunks", "main-1a2b.js"),
    `self.__env={NEXT_PUBLIC_STACK_PUBLISHABLE_CLIENT_KEY:"${baked}"};console.log("${baked}".length);\n`,
  );
  await writeFile(join(jsDir, ".next", "static", "chunks", "app", "page-9f.js"), `let k='${baked}',n=1;`, {
    mode: 0o640,
  });
  await writeFile(join(jsDir, ".next", "server.html"), `<script>window.k="${baked}"</script>`);
  await writeFile(join(jsDir, "apps", "backend", "route.js"), `export const other = "${"0".repeat(64)}";\n`);

  envFile = join(dir, "state", "rotated-secrets.env");
  const shared = { STACK_EMULATOR_LIB: join(dockerDir, "lib"), STACK_ROTATED_ENV_FILE: envFile };
  // Both servers start at once; whichever started is stopped in afterAll even if the other failed.
  const [pgStarted, supStarted] = await Promise.allSettled([
    startPostgres().then((p) => {
      pg = p;
      return p;
    }),
    // The environment the container was created with: the baked placeholders.
    startSupervisor({ dir, programEnv: { ...PLACEHOLDERS, ...shared } }).then((s) => {
      sup = s;
      return s;
    }),
  ]);
  for (const started of [pgStarted, supStarted]) if (started.status === "rejected") throw started.reason;
  await pg.sql(`
    CREATE TABLE "ApiKeySet" (
      "projectId" text NOT NULL,
      "id" uuid NOT NULL,
      "description" text NOT NULL,
      "publishableClientKey" text UNIQUE,
      "secretServerKey" text UNIQUE,
      "superSecretAdminKey" text UNIQUE,
      "createdAt" timestamp(3) NOT NULL DEFAULT now(),
      "updatedAt" timestamp(3) NOT NULL DEFAULT '2020-01-01',
      PRIMARY KEY ("projectId", "id")
    );
    INSERT INTO "ApiKeySet" ("projectId", "id", "description", "publishableClientKey", "secretServerKey", "superSecretAdminKey")
    VALUES
      ('internal', '${KEY_SET_ID}', 'emulator', '${PLACEHOLDERS[PCK]}', '${PLACEHOLDERS[SSK]}', '${PLACEHOLDERS[SAK]}'),
      ('internal', '${OTHER_KEY_SET_ID}', 'user-created', '${OTHER_KEYS.pck}', '${OTHER_KEYS.ssk}', '${OTHER_KEYS.sak}');
  `);

  rotateEnv = {
    ...PLACEHOLDERS,
    ...shared,
    ...sup.env,
    STACK_ROTATE_JS_DIR: jsDir,
    STACK_ROTATE_STATE_DIR: join(dir, "state", "rotation"),
    STACK_DATABASE_CONNECTION_STRING: pg.url,
  };
}, 180_000);

afterAll(async () => {
  await sup?.stop();
  await pg?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
}, 180_000);

// Each rotation restarts real programs: generous limits for a loaded 2-core machine.
describe("rotate-secrets", { timeout: 150_000 }, () => {
  it("starts from the baked placeholders", async () => {
    const a = await apps();
    expect(a.backend.publishableClientKey).toBe(PLACEHOLDERS[PCK]);
    expect(a.dashboard.cronSecret).toBe(PLACEHOLDERS.CRON_SECRET);
  });

  const good = randomSecrets();
  const pwned = () => join(dir, "pwned");
  const badInputs: [string, () => string, RegExp][] = [
    [
      "a non-hex value",
      () => secretLines({ ...good, [SSK]: "g".repeat(64) }),
      /STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY must be exactly 64 hex characters/,
    ],
    [
      "a value one char short",
      () => secretLines({ ...good, CRON_SECRET: good.CRON_SECRET.slice(1) }),
      /CRON_SECRET must be exactly 64/,
    ],
    [
      "a value with a trailing space",
      () => secretLines({ ...good, [PCK]: `${good[PCK]} ` }),
      /STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY must be exactly 64/,
    ],
    [
      "a name the app reads but the rotation does not take",
      () => `${secretLines(good)}STACK_SECRET_SERVER_KEY=${good[SSK]}\n`,
      /line 5: unknown key STACK_SECRET_SERVER_KEY/,
    ],
    [
      "a missing key",
      () => secretLines({ ...good, [SAK]: undefined }),
      /STACK_SEED_INTERNAL_PROJECT_SUPER_SECRET_ADMIN_KEY is missing/,
    ],
    ["an unknown key", () => `${secretLines(good)}PATH=${"a".repeat(64)}\n`, /line 5: unknown key PATH/],
    [
      "a key given twice",
      () => `${secretLines(good)}CRON_SECRET=${"1".repeat(64)}\n`,
      /CRON_SECRET is given twice/,
    ],
    ["empty input", () => "", /STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY is missing/],
    [
      "command substitution",
      () => secretLines({ ...good, CRON_SECRET: `$(touch ${pwned()})` }),
      /CRON_SECRET must be/,
    ],
    [
      "backticks and a semicolon",
      () => secretLines({ ...good, CRON_SECRET: `\`touch ${pwned()}\`;touch ${pwned()}` }),
      /CRON_SECRET must be/,
    ],
    [
      "an injected key name",
      () => `$(touch ${pwned()})=${"a".repeat(64)}\n${secretLines(good)}`,
      /line 1: expected KEY=value/,
    ],
  ];

  describe("bad input", () => {
    let before: Awaited<ReturnType<typeof snapshot>>;
    beforeAll(async () => {
      before = await snapshot();
    });

    it.each(badInputs)("rejects %s with a message", async (_name, input, message) => {
      const r = await rotate(input());
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(message);
      expect(r.stderr).toMatch(/nothing was changed/);
      // Valid values of a rejected input are secrets too: never echoed.
      expect(r.stderr).not.toContain(good[SSK]);
    });

    it("rejects valid input when supervisord cannot be reached", async () => {
      const r = await rotate(secretLines(good), { STACK_SUPERVISOR_RUN_DIR: join(dir, "elsewhere") });
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/cannot reach supervisord .* nothing was changed/);
      // The client's own words, and no shell noise from its pipes closing early.
      expect(r.stderr).toMatch(/supervisor-control: cannot talk to supervisord/);
      expect(r.stderr).not.toMatch(/file descriptor/i);
    });

    it("reads a bare program name as supervisord does (name:name), before changing anything", async () => {
      // The programs are app:backend and app:dashboard; "backend" alone would be backend:backend.
      const r = await rotate(secretLines(good), { STACK_ROTATE_PROGRAMS: "backend" });
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/supervisord has no backend/);
      expect(r.stderr).toMatch(/nothing was changed/);
    });

    it("rejects valid input naming a program supervisord does not have", async () => {
      const r = await rotate(secretLines(good), { STACK_ROTATE_PROGRAMS: "app:backend app:nosuch" });
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/supervisord has no app:nosuch/);
      expect(r.stderr).toMatch(
        /cannot reach supervisord or it has no app:backend app:nosuch .* nothing was changed/,
      );
    });

    it("left the database, the files and the running programs as they were", async () => {
      await expect(access(pwned())).rejects.toThrow();
      const after = await snapshot();
      expect(after.rows).toEqual(before.rows);
      expect(after.tree).toEqual(before.tree);
      expect(after.envFile).toBeNull();
      expect(after.apps.backend.pid).toBe(before.apps.backend.pid);
      expect(after.apps.dashboard.pid).toBe(before.apps.dashboard.pid);
    });
  });

  it("changes nothing when the key set row is not there", async () => {
    const before = await snapshot();
    const r = await rotate(secretLines(good), {
      STACK_ROTATE_KEY_SET_ID: "00000000-0000-4000-8000-000000000000",
    });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/no "ApiKeySet" row .* nothing was changed/);
    const after = await snapshot();
    expect(after).toEqual(before);
  });

  let first: { backend: AppAnswer; dashboard: AppAnswer };

  it("rotates the row, the built files, the env file and the running programs", async () => {
    const before = await snapshot();
    const r = await rotate(secretLines(good));
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).not.toContain(good[PCK]);

    const rows = await keyRows();
    expect(rows[0]).toMatch(new RegExp(`^${KEY_SET_ID}\\|${good[PCK]}\\|${good[SSK]}\\|${good[SAK]}\\|`));
    expect(rows[0]).not.toMatch(/\|2020-01-01/);
    expect(rows[1]).toBe(before.rows[1]);

    const tree = await readTree(jsDir);
    for (const [path, text] of tree) {
      expect(text, path).not.toContain(PLACEHOLDERS[PCK]);
      expect(text).toBe(before.tree.get(path)?.replaceAll(PLACEHOLDERS[PCK], good[PCK]));
    }
    expect(tree.get(".next/static/chunks/main-1a2b.js")).toContain(good[PCK]);
    expect((await stat(join(jsDir, ".next/static/chunks/app/page-9f.js"))).mode & 0o777).toBe(0o640);

    expect((await stat(envFile)).mode & 0o777).toBe(0o600);
    // The four names and the three the app reads them by, as the original's rotate-secrets writes them.
    expect(await readFile(envFile, "utf8")).toBe(rotatedEnvFile(good));

    first = await appsWithKey(good[PCK]);
    for (const name of ["backend", "dashboard"] as const) {
      const now = first[name];
      expect(now.seedPublishableClientKey).toBe(good[PCK]);
      expect(now.seedSecretServerKey).toBe(good[SSK]);
      expect(now.seedSuperSecretAdminKey).toBe(good[SAK]);
      expect(now.secretServerKey).toBe(good[SSK]);
      expect(now.superSecretAdminKey).toBe(good[SAK]);
      expect(now.cronSecret).toBe(good.CRON_SECRET);
      expect(now.publishableClientKey).toBe(good[PCK]);
      // The old launcher and the child that held the port are gone: the port was freed and bound again.
      expect(now.pid).not.toBe(before.apps[name].pid);
      expect(isAlive(before.apps[name].pid)).toBe(false);
      expect(isAlive(before.apps[name].launcherPid)).toBe(false);
    }
  });

  it("changes nothing when run again with the same values", async () => {
    const statOf = async (p: string) => {
      const s = await stat(p);
      return [s.ino, s.mtimeMs];
    };
    const files = [...(await readTree(jsDir)).keys()].map((p) => join(jsDir, p));
    const before = { snap: await snapshot(), stats: await Promise.all([...files, envFile].map(statOf)) };
    const r = await rotate(secretLines(good));
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/nothing changed/);
    const after = { snap: await snapshot(), stats: await Promise.all([...files, envFile].map(statOf)) };
    expect(after).toEqual(before);
    expect(after.snap.apps.backend.pid).toBe(first.backend.pid);
  });

  it("restarts the programs when an earlier run was interrupted before its restart", async () => {
    // rotate-secrets drops its marker before restarting and writes it back after: no marker is exactly the
    // state an interrupted run leaves, with the row, the files and the env file already rotated.
    await rm(join(rotateEnv.STACK_ROTATE_STATE_DIR!, "applied"));
    const before = await snapshot();
    const r = await rotate(secretLines(good));
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/rotated \(restart only\); restarted app:\*/);
    expect(await keyRows()).toEqual(before.rows);
    expect(await readTree(jsDir)).toEqual(before.tree);
    const restarted = await eventually(async () => {
      const a = await apps();
      return a.backend.pid !== before.apps.backend.pid && a.dashboard.pid !== before.apps.dashboard.pid
        ? a
        : undefined;
    }, "both programs to be restarted");
    expect(restarted.backend.publishableClientKey).toBe(good[PCK]);
    expect(isAlive(before.apps.backend.pid)).toBe(false);
  });

  it("restarts only the programs it is given, with the psql STACK_ROTATE_PSQL names", async () => {
    await rm(join(rotateEnv.STACK_ROTATE_STATE_DIR!, "applied"));
    const before = await snapshot();
    const r = await rotate(secretLines(good), {
      STACK_ROTATE_PROGRAMS: "app:backend",
      // The binary behind Debian's Perl wrapper (/usr/bin/psql), which the Debian image names.
      STACK_ROTATE_PSQL: join(await postgresBinDir(), "psql"),
    });
    expect(r.stderr).toBe("");
    expect(r.stdout).toMatch(/rotated \(restart only\); restarted app:backend$/m);
    const restarted = await eventually(async () => {
      const a = await apps();
      return a.backend.pid !== before.apps.backend.pid ? a : undefined;
    }, "the backend to be restarted");
    expect(restarted.dashboard.pid).toBe(before.apps.dashboard.pid);
    expect(restarted.backend.publishableClientKey).toBe(good[PCK]);
  });

  it("rejects bad input after a rotation without touching the rotated state", async () => {
    const before = await snapshot();
    const bad = await rotate(secretLines({ ...good, CRON_SECRET: "not hex" }));
    expect(bad.code).not.toBe(0);
    expect(await snapshot()).toEqual(before);
  });
});

describe("trigger-fast-rotate", { timeout: 150_000 }, () => {
  let handoffLog: string;
  let triggerEnv: Record<string, string>;

  beforeAll(async () => {
    handoffLog = join(dir, "docker-argv");
    // Stands in for the docker CLI only: it checks the arguments it was given and runs the real rotate-secrets
    // with the real stdin, as `docker exec -i` would inside the container.
    const fakeDocker = join(dir, "docker");
    await writeExecutable(
      fakeDocker,
      `#!/bin/sh\nprintf '%s\\n' "$*" >>'${handoffLog}'\n[ "$*" = "exec -i stack rotate-secrets" ] || exit 125\nexec '${join(dockerDir, "rotate-secrets")}'\n`,
    );
    triggerEnv = { ...rotateEnv, STACK_DOCKER: fakeDocker };
  });

  const trigger = (input: string, env: Record<string, string> = {}) =>
    run(join(cloudInitDir, "scripts", "trigger-fast-rotate"), [], { env: { ...triggerEnv, ...env }, input });

  it("rejects bad input with exit status 2 before handing anything to the container", async () => {
    const before = await snapshot();
    const r = await trigger(secretLines({ ...randomSecrets(), [SSK]: "$(reboot)" }));
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(
      /trigger-fast-rotate: line 2: STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY must be exactly 64/,
    );
    await expect(access(handoffLog)).rejects.toThrow();
    expect(await snapshot()).toEqual(before);
  });

  it("hands valid secrets to rotate-secrets, which rotates from already rotated values", async () => {
    // Upper-case hex is accepted, as by the original's rotate-secrets, and kept as given.
    const s: Secrets = { ...randomSecrets(), [SSK]: randomSecrets()[SSK].toUpperCase() };
    const before = await snapshot();
    const previous = before.apps.backend.publishableClientKey!;
    expect(previous).not.toBe(PLACEHOLDERS[PCK]);
    // Unordered, with a blank line and a CRLF ending: the hand-off re-renders the canonical form.
    const input = `\nCRON_SECRET=${s.CRON_SECRET}\r\n${secretLines({ ...s, CRON_SECRET: undefined })}`;
    const r = await trigger(input);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect((await readFile(handoffLog, "utf8")).trim()).toBe("exec -i stack rotate-secrets");
    const a = await appsWithKey(s[PCK]);
    expect(a.backend.cronSecret).toBe(s.CRON_SECRET);
    expect(a.backend.secretServerKey).toBe(s[SSK]);
    expect((await keyRows())[0]).toContain(s[SSK]);
    for (const [path, text] of await readTree(jsDir)) {
      expect(text).not.toContain(previous);
      expect(text).toBe(before.tree.get(path)?.replaceAll(previous, s[PCK]));
    }
    expect((await stat(envFile)).mode & 0o777).toBe(0o600);
    expect(await readFile(envFile, "utf8")).toBe(rotatedEnvFile(s));
  });

  it("exits 1 with the container's own message when the container refuses the rotation", async () => {
    const before = await snapshot();
    const r = await trigger(secretLines(randomSecrets()), {
      STACK_ROTATE_KEY_SET_ID: "00000000-0000-4000-8000-000000000000",
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/rotate-secrets: no "ApiKeySet" row/);
    expect(r.stderr).toMatch(/trigger-fast-rotate: the app did not take the keys/);
    expect(await snapshot()).toEqual(before);
  });
});

// What a guest without containers runs before it starts the app again (a container would be new).
describe("rotate-secrets --reset", { timeout: 150_000 }, () => {
  const reset = () => run(join(dockerDir, "rotate-secrets"), ["--reset"], { env: rotateEnv });

  it("puts the built files back as built and removes the env file, restarting nothing", async () => {
    const before = await snapshot();
    expect(before.envFile).not.toBeNull();
    const r = await reset();
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/reset \(3 built files restored/);
    await expect(access(envFile)).rejects.toThrow();
    await expect(access(join(rotateEnv.STACK_ROTATE_STATE_DIR!, "applied"))).rejects.toThrow();
    const rotated = before.apps.backend.publishableClientKey!;
    for (const [path, text] of await readTree(jsDir)) {
      expect(text, path).not.toContain(rotated);
      expect(text).toBe(before.tree.get(path)?.replaceAll(rotated, PLACEHOLDERS[PCK]));
    }
    const after = await apps();
    expect(after.backend.pid).toBe(before.apps.backend.pid);
    // The database is the seed's business at the next start.
    expect(await keyRows()).toEqual(before.rows);
  });

  it("does nothing more the second time, and a rotation after it works from the baked key", async () => {
    const again = await reset();
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(/reset \(0 built files restored/);
    const s = randomSecrets();
    const r = await rotate(secretLines(s));
    expect(r.code).toBe(0);
    await appsWithKey(s[PCK]);
    expect((await readTree(jsDir)).get(".next/static/chunks/main-1a2b.js")).toContain(s[PCK]);
  });

  it("refuses arguments it does not know", async () => {
    const r = await run(join(dockerDir, "rotate-secrets"), ["--rest"], { env: rotateEnv });
    expect(r.code).toBe(64);
    expect(r.stderr).toMatch(/usage: rotate-secrets/);
  });
});
