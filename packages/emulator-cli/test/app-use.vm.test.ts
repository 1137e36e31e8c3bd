import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, renameSync, symlinkSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { QgaClient } from "@stack/qga";
import { describe, expect, it } from "vitest";
import {
  internalClientHeaders,
  PUBLISHABLE_KEY_NAME as PCK,
  SERVER_KEY_NAME as SSK,
} from "../src/contract/contract.js";
import { isPortFree } from "../src/core/ports.js";
import {
  CLI,
  devImageFixture,
  type Instance,
  instanceFiles,
  keysOf,
  placeholderPublishableKey,
  runCli,
  runningQemuPid,
} from "./helpers.js";

const TIMEOUT = 900_000;
const dev = devImageFixture();

const instanceDir = (inst: Instance, name = "default") => join(inst.home, "instances", name);
const placeholderKey = placeholderPublishableKey();

/** A request to the backend as a project's client, server or admin, with that access type's key. */
async function projectStatus(
  backendPort: number,
  as: { project: string; access: "client" | "server" | "admin"; key: string },
): Promise<number> {
  const header = {
    client: "x-stack-publishable-client-key",
    server: "x-stack-secret-server-key",
    admin: "x-stack-super-secret-admin-key",
  }[as.access];
  const res = await fetch(`http://127.0.0.1:${backendPort}/api/v1/projects/current`, {
    headers: { "x-stack-project-id": as.project, "x-stack-access-type": as.access, [header]: as.key },
  });
  await res.arrayBuffer();
  return res.status;
}

/** Polls `fn` until it returns what `ok` accepts (share-sync copies changes within a fraction of a second). */
async function eventually<T>(
  fn: () => Promise<T> | T,
  ok: (value: T) => boolean,
  timeoutMs = 15_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (ok(value) || Date.now() > deadline) return value;
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function cli(args: string[], env: NodeJS.ProcessEnv) {
  const result = await runCli(args, env);
  expect(result.code, result.stderr).toBe(0);
  return result;
}

/**
 * A child for `run`: asks the backend about the injected project with the injected key and with the image's public
 * placeholder, then prints those statuses and its STACK variables as JSON.
 */
const probeChild = `
const env = process.env;
const status = (key) => fetch(env.STACK_API_URL + "/api/v1/projects/current", {
  headers: { "x-stack-project-id": env.STACK_PROJECT_ID, "x-stack-access-type": "client", "x-stack-publishable-client-key": key },
}).then((r) => r.status);
Promise.all([status(env.NEXT_PUBLIC_STACK_PUBLISHABLE_CLIENT_KEY), status(${JSON.stringify(placeholderKey)})]).then(
  ([injected, placeholder]) => {
    const stack = Object.fromEntries(Object.entries(env).filter(([k]) => /STACK_(?!EMULATOR)/.test(k)));
    console.log(JSON.stringify({ injected, placeholder, env: stack }));
  },
);`;

/** `run` as a process of its own, resolved once its child printed "ready", so a test can signal it. */
function spawnRun(args: string[], env: NodeJS.ProcessEnv) {
  const child = spawn(process.execPath, [CLI, "run", ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => {
    stderr += d.toString();
  });
  const ready = new Promise<void>((resolvePromise) => {
    child.stdout.on("data", (d: Buffer) => {
      stdout += d.toString();
      if (stdout.includes("ready")) resolvePromise();
    });
  });
  const exited = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolvePromise) => {
    child.on("close", (code) => resolvePromise({ code, stdout, stderr }));
  });
  return { child, ready, exited };
}

const waitingChild = (onSigterm: string) =>
  `${onSigterm}; console.log("ready"); setInterval(() => {}, 1000);`;

describe("using the emulator from an app (dev image)", () => {
  it(
    "run starts the emulator for a real child with a working connection, then stops it, saving its state",
    async () => {
      const inst = await dev.instance();
      const result = await cli(["run", "--", process.execPath, "-e", probeChild], inst.env);
      const report = JSON.parse(result.stdout);
      expect(report.injected).toBe(200);
      expect(report.placeholder).toBe(401);
      const env = report.env as Record<string, string>;
      for (const prefix of ["", "NEXT_PUBLIC_", "VITE_", "EXPO_PUBLIC_"]) {
        expect(env[`${prefix}STACK_PROJECT_ID`]).toBe("internal");
        expect(env[`${prefix}STACK_API_URL`]).toBe(`http://127.0.0.1:${inst.backend}`);
        expect(env[`${prefix}STACK_PUBLISHABLE_CLIENT_KEY`]).toBe(keysOf(inst)[PCK]);
      }
      expect(env.STACK_SECRET_SERVER_KEY).toBe(keysOf(inst)[SSK]);
      expect(Object.keys(env).filter((k) => k.endsWith("SECRET_SERVER_KEY"))).toEqual([
        "STACK_SECRET_SERVER_KEY",
      ]);
      // run started it, so run stopped it, saving the state as `stop` does.
      expect(runningQemuPid(join(instanceDir(inst), "qemu.pid"))).toBeUndefined();
      expect(existsSync(join(instanceDir(inst), "state.json"))).toBe(false);
      expect(existsSync(join(instanceDir(inst), "suspend", "state"))).toBe(true);
    },
    TIMEOUT,
  );

  it(
    "run leaves a running emulator running and passes exit codes and SIGTERM through",
    async () => {
      const inst = await dev.instance();
      await cli(["start", "--json"], inst.env);

      expect((await runCli(["run", "exit 7"], inst.env)).code).toBe(7);

      // The child hears the SIGTERM sent to run and decides its exit code.
      const handled = spawnRun(
        ["--", process.execPath, "-e", waitingChild(`process.on("SIGTERM", () => process.exit(42))`)],
        inst.env,
      );
      await handled.ready;
      handled.child.kill("SIGTERM");
      expect((await handled.exited).code).toBe(42);

      // A child the signal ends: run exits as a shell would report it, 128 + 15.
      const killed = spawnRun(["--", process.execPath, "-e", waitingChild("")], inst.env);
      await killed.ready;
      killed.child.kill("SIGTERM");
      expect((await killed.exited).code).toBe(143);

      const status = await cli(["status", "--json"], inst.env);
      expect(status.json.state).toBe("running");
    },
    TIMEOUT,
  );

  it(
    "start --config-file gives a project of its own that survives stop/start; env and run use it",
    async () => {
      const inst = await dev.instance();
      const configFile = join(inst.home, "stack.config.ts");
      writeFileSync(configFile, "export const config = {};\n");
      const { json: project } = await cli(["start", "--config-file", configFile], inst.env);
      expect(Object.keys(project).sort()).toEqual([
        "project_id",
        "publishable_client_key",
        "secret_server_key",
      ]);
      const internal = keysOf(inst);
      expect(project.project_id).not.toBe("internal");
      expect(project.publishable_client_key).toMatch(/^pck_[0-9a-f]{64}$/);
      expect(project.secret_server_key).toMatch(/^ssk_[0-9a-f]{64}$/);

      const as = (headers: Parameters<typeof projectStatus>[1]) => projectStatus(inst.backend, headers);
      const id = project.project_id;
      expect(await as({ project: id, access: "client", key: project.publishable_client_key })).toBe(200);
      expect(await as({ project: id, access: "server", key: project.secret_server_key })).toBe(200);
      expect(await as({ project: id, access: "client", key: internal[PCK] as string })).toBe(401);
      expect(await as({ project: "internal", access: "client", key: project.publishable_client_key })).toBe(
        401,
      );
      expect(await as({ project: "internal", access: "client", key: internal[PCK] as string })).toBe(200);

      // The same config file again, through a symlink: the same project.
      const link = join(inst.home, "link.config.ts");
      symlinkSync(configFile, link);
      const again = await cli(["start", "--config-file", link], inst.env);
      expect(again.json).toEqual(project);
      const env = await cli(["env", "--prefix", "none", "--config-file", configFile, "--json"], inst.env);
      expect(env.json).toEqual({
        STACK_PROJECT_ID: project.project_id,
        STACK_PUBLISHABLE_CLIENT_KEY: project.publishable_client_key,
        STACK_API_URL: `http://127.0.0.1:${inst.backend}`,
        STACK_SECRET_SERVER_KEY: project.secret_server_key,
      });
      const ran = await cli(
        ["run", "--config-file", configFile, "--", process.execPath, "-e", probeChild],
        inst.env,
      );
      expect(JSON.parse(ran.stdout)).toMatchObject({
        injected: 200,
        placeholder: 401,
        env: { VITE_STACK_PROJECT_ID: project.project_id },
      });

      // Another config file gets another project.
      const otherFile = join(inst.home, "other.config.ts");
      writeFileSync(otherFile, "export const config = {};\n");
      const other = await cli(["start", "--config-file", otherFile], inst.env);
      expect(other.json.project_id).not.toBe(project.project_id);

      // Concurrent first requests for one path end with one project (the guest's index entry is created atomically).
      const provision = (headers: Record<string, string>) =>
        fetch(`http://127.0.0.1:${inst.backend}/api/v1/internal/local-emulator/project`, {
          method: "POST",
          headers: { ...headers, "content-type": "application/json" },
          body: JSON.stringify({ absolute_file_path: otherFile }),
        });
      const racing = await Promise.all(
        [1, 2, 3].map(() =>
          provision(internalClientHeaders(internal[PCK] as string)).then(
            (r) => r.json() as Promise<{ project_id: string }>,
          ),
        ),
      );
      expect(new Set(racing.map((r) => r.project_id))).toEqual(new Set([other.json.project_id]));
      // Provisioning takes a key of the internal project: another project's is refused.
      expect((await provision(internalClientHeaders(project.publishable_client_key))).status).toBe(401);
      const foreign = { ...internalClientHeaders(project.publishable_client_key), "x-stack-project-id": id };
      expect((await provision(foreign)).status).toBe(403);

      // Kept on the instance disk: across a saved stop, and across a power-down and cold boot with fresh keys.
      await cli(["stop"], inst.env);
      expect((await cli(["start", "--config-file", configFile], inst.env)).json).toEqual(project);
      await cli(["stop", "--no-save"], inst.env);
      expect((await cli(["start", "--config-file", configFile], inst.env)).json).toEqual(project);
      expect(keysOf(inst)[PCK]).not.toBe(internal[PCK]);
      expect(await as({ project: id, access: "client", key: project.publishable_client_key })).toBe(200);
    },
    TIMEOUT,
  );

  it(
    "shares a config file with the guest and nothing else: applied, host edits in, dashboard edits out, across stop",
    async () => {
      const inst = await dev.instance();
      const projectDir = join(inst.home, "work", "app");
      mkdirSync(projectDir, { recursive: true });
      writeFileSync(join(inst.home, "work", "package.json"), '{"dependencies":{"@stackframe/react":"2"}}');
      writeFileSync(join(projectDir, ".env.local"), "MY_SECRET=not-for-the-guest\n");
      const configFile = join(projectDir, "stack.config.ts");
      writeFileSync(configFile, 'export const config = {"teams": {"allowClientTeamCreation": false}};\n');
      const { json: project } = await cli(["start", "--config-file", configFile], inst.env);
      // The backend's answer, as the original CLI's request gets it, carries the project's admin key too.
      const provisioned = (await (
        await fetch(`http://127.0.0.1:${inst.backend}/api/v1/internal/local-emulator/project`, {
          method: "POST",
          headers: { ...internalClientHeaders(readFileSync(instanceFiles(inst.home).internalPck, "utf8")) },
          body: JSON.stringify({ absolute_file_path: configFile }),
        })
      ).json()) as Record<string, string>;
      expect(provisioned.project_id).toBe(project.project_id);
      expect(JSON.parse(provisioned.branch_config_override_string as string)).toEqual({
        teams: { allowClientTeamCreation: false },
      });
      const admin = {
        "x-stack-project-id": project.project_id,
        "x-stack-access-type": "admin",
        "x-stack-super-secret-admin-key": provisioned.super_secret_admin_key as string,
      };
      const branchConfig = async () => {
        const res = await fetch(`http://127.0.0.1:${inst.backend}/api/v1/internal/config/override/branch`, {
          headers: admin,
        });
        return JSON.parse(((await res.json()) as { config_string: string }).config_string);
      };

      // The guest sees the file and the package.json files beside it, at their absolute paths, nothing else.
      const state = JSON.parse(readFileSync(instanceFiles(inst.home).state, "utf8"));
      const qga = await QgaClient.connect(join(state.socketDir, "qga.sock"), { timeoutMs: 15_000 });
      const listing = await qga.exec({ path: "/usr/bin/find", args: ["/host", "-type", "f"] });
      await qga.close();
      expect(listing.stdout.toString().trim().split("\n").sort()).toEqual(
        [join("/host", inst.home, "work", "package.json"), join("/host", configFile)].sort(),
      );

      // An edit on the host, saved by rename as editors do, is what the backend reads next.
      writeFileSync(
        `${configFile}.swp`,
        'export const config = {"teams": {"allowClientTeamCreation": true}};\n',
      );
      renameSync(`${configFile}.swp`, configFile);
      expect(await eventually(branchConfig, (c) => c.teams?.allowClientTeamCreation === true)).toEqual({
        teams: { allowClientTeamCreation: true },
      });

      // A dashboard edit reaches the host file, rendered as the backend renders configs.
      const patched = await fetch(`http://127.0.0.1:${inst.backend}/api/v1/internal/config/override/branch`, {
        method: "PATCH",
        headers: { ...admin, "content-type": "application/json" },
        body: JSON.stringify({ config_override_string: JSON.stringify({ "auth.allowLocalhost": true }) }),
      });
      expect(patched.status).toBe(200);
      const written = await eventually(
        () => readFileSync(configFile, "utf8"),
        (text) => text.includes("allowLocalhost"),
      );
      expect(written).toBe(
        'import type { StackConfig } from "@stackframe/react";\n\nexport const config: StackConfig = {\n' +
          '  "teams": {\n    "allowClientTeamCreation": true\n  },\n  "auth": {\n    "allowLocalhost": true\n  }\n};\n',
      );

      // stop unmounts the share to save; the next start mounts it again and edits flow as before.
      const stopped = await cli(["stop", "--json"], inst.env);
      expect(stopped.json.saved).toBe(true);
      expect(JSON.parse(readFileSync(instanceFiles(inst.home).suspendRecord, "utf8")).shareDevice).toBe(true);
      const resumed = await cli(["start", "--json"], inst.env);
      expect(resumed.json.boot).toBe("quick-boot");
      expect(await branchConfig()).toEqual({
        teams: { allowClientTeamCreation: true },
        auth: { allowLocalhost: true },
      });
      writeFileSync(`${configFile}.swp`, "export const config = {};\n");
      renameSync(`${configFile}.swp`, configFile);
      expect(await eventually(branchConfig, (c) => Object.keys(c).length === 0)).toEqual({});
    },
    TIMEOUT,
  );

  it(
    "--ports auto beats an exported port variable (a flag beats the environment), with the original's names too",
    async () => {
      const inst = await dev.instance();
      // The exported ports are taken: a start that used them would fail with PORT_IN_USE.
      const blocker = createServer().listen(inst.backend, "127.0.0.1");
      await new Promise((r) => blocker.once("listening", r));
      try {
        const env = { ...inst.env, EMULATOR_DASHBOARD_PORT: String(inst.backend) };
        const started = await cli(["--instance", "shard1", "start", "--ports", "auto", "--json"], env);
        const ports = Object.fromEntries(
          started.json.services.map((s: { name: string; hostPort: number }) => [s.name, s.hostPort]),
        );
        expect(ports.backend).not.toBe(inst.backend);
        expect(ports.dashboard).not.toBe(inst.backend);
        expect((await fetch(`http://127.0.0.1:${ports.backend}/health?db=1`)).status).toBe(200);
      } finally {
        blocker.close();
        await runCli(["--instance", "shard1", "stop", "--no-save"], inst.env);
      }
    },
    TIMEOUT,
  );

  it(
    "runs three instances at once on free ports of their own, kept for their next start; stop --all ends them",
    async () => {
      const inst = await dev.instance();
      // A prefix whose mock OAuth port (the prefix, then 14) is free here: that host port is not for picking.
      let prefix = 600;
      while (!(await isPortFree(Number(`${prefix}14`)))) prefix++;
      const oauthPort = Number(`${prefix}14`);
      const env: NodeJS.ProcessEnv = { ...inst.env, PORT_PREFIX: String(prefix) };
      for (const service of ["DASHBOARD", "BACKEND", "MINIO", "INBUCKET"])
        delete env[`STACK_EMULATOR_${service}_PORT`];
      const names = ["one", "two", "three"];
      const pidFile = (name: string) => join(instanceDir(inst, name), "qemu.pid");
      try {
        const ports: Record<string, Record<string, number>> = {};
        const portsOf = (services: { name: string; hostPort: number }[]) =>
          Object.fromEntries(
            services.filter((s) => s.name !== "mock-oauth").map((s) => [s.name, s.hostPort]),
          );
        for (const [i, name] of names.entries()) {
          const started = await cli(["--instance", name, "start", "--ports", "auto", "--json"], env);
          ports[name] = portsOf(started.json.services);
          // One host port for the mock OAuth server, the number the guest names to browsers: the first instance's.
          const oauth = started.json.services.find((s: { name: string }) => s.name === "mock-oauth");
          if (i === 0) expect(oauth?.hostPort).toBe(oauthPort);
          else {
            expect(oauth).toBeUndefined();
            expect(started.stderr).toMatch(
              new RegExp(`host port ${oauthPort} \\(mock-oauth\\) is taken.*OAuth sign-ins`),
            );
          }
        }
        const all = names.flatMap((name) => Object.values(ports[name] as Record<string, number>));
        expect(new Set(all).size).toBe(12);
        expect(all).not.toContain(26700);
        expect(all).not.toContain(26701);

        for (const name of names) {
          const status = await cli(["--instance", name, "status", "--json"], env);
          expect(status.json.state).toBe("running");
          expect(portsOf(status.json.services)).toEqual(ports[name]);
          const health = await fetch(`http://127.0.0.1:${ports[name]?.backend}/health?db=1`);
          expect(health.status).toBe(200);
          const vars = await cli(["--instance", name, "env", "--json"], env);
          expect(vars.json.STACK_API_URL).toBe(`http://127.0.0.1:${ports[name]?.backend}`);
        }
        const listed = await cli(["list", "--json"], env);
        expect(
          listed.json.instances.map((i: { instance: string; state: string; ports: object }) => [
            i.instance,
            i.state,
            i.ports,
          ]),
        ).toEqual(
          [...names]
            .sort()
            .map((name) => [
              name,
              "running",
              name === "one" ? { ...ports[name], "mock-oauth": oauthPort } : ports[name],
            ]),
        );

        const stopped = await cli(["stop", "--all", "--json"], env);
        expect(stopped.json.instances).toHaveLength(3);
        for (const entry of stopped.json.instances)
          expect(entry).toMatchObject({ wasRunning: true, saved: true });
        for (const name of names) expect(runningQemuPid(pidFile(name))).toBeUndefined();

        // The next start, without --ports, comes back on the recorded ports.
        const restarted = await cli(["--instance", "two", "start", "--json"], env);
        expect(restarted.json.boot).toBe("quick-boot");
        expect(portsOf(restarted.json.services)).toEqual(ports.two);
      } finally {
        await runCli(["stop", "--all", "--no-save"], env);
      }
      for (const name of names) expect(runningQemuPid(pidFile(name))).toBeUndefined();
    },
    TIMEOUT,
  );
});
