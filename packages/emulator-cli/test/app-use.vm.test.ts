import { spawn } from "node:child_process";
import { existsSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseEnv } from "../src/secrets.js";
import { CLI, devImageFixture, type Instance, PLACEHOLDERS, runCli, runningQemuPid } from "./helpers.js";

const TIMEOUT = 900_000;
const dev = devImageFixture();

const instanceDir = (inst: Instance, name = "default") => join(inst.home, "instances", name);
const keysOf = (inst: Instance) => parseEnv(readFileSync(join(instanceDir(inst), "keys.env"), "utf8"));
const placeholderKey = parseEnv(readFileSync(PLACEHOLDERS, "utf8")).STACK_PUBLISHABLE_CLIENT_KEY as string;

async function projectStatus(
  backendPort: number,
  headers: { project?: string; publishable?: string; server?: string },
): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${backendPort}/api/v1/projects/current`, {
    headers: {
      ...(headers.project ? { "x-stack-project-id": headers.project } : {}),
      ...(headers.publishable ? { "x-stack-publishable-client-key": headers.publishable } : {}),
      ...(headers.server ? { "x-stack-secret-server-key": headers.server } : {}),
    },
  });
  await res.arrayBuffer();
  return res.status;
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
  headers: { "x-stack-project-id": env.STACK_PROJECT_ID, "x-stack-publishable-client-key": key },
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
        expect(env[`${prefix}STACK_PUBLISHABLE_CLIENT_KEY`]).toBe(keysOf(inst).STACK_PUBLISHABLE_CLIENT_KEY);
      }
      expect(env.STACK_SECRET_SERVER_KEY).toBe(keysOf(inst).STACK_SECRET_SERVER_KEY);
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
      expect(project.publishable_client_key).toMatch(/^[0-9a-f]{64}$/);
      expect(project.publishable_client_key).not.toBe(internal.STACK_PUBLISHABLE_CLIENT_KEY);
      expect(project.secret_server_key).not.toBe(internal.STACK_SECRET_SERVER_KEY);

      const as = (headers: Parameters<typeof projectStatus>[1]) => projectStatus(inst.backend, headers);
      expect(await as({ project: project.project_id, publishable: project.publishable_client_key })).toBe(
        200,
      );
      expect(await as({ project: project.project_id, server: project.secret_server_key })).toBe(200);
      expect(
        await as({ project: project.project_id, publishable: internal.STACK_PUBLISHABLE_CLIENT_KEY }),
      ).toBe(401);
      expect(await as({ publishable: project.publishable_client_key })).toBe(401);
      expect(await as({ publishable: internal.STACK_PUBLISHABLE_CLIENT_KEY })).toBe(200);

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
      const racing = await Promise.all(
        [1, 2, 3].map(() =>
          fetch(`http://127.0.0.1:${inst.backend}/api/v1/internal/local-emulator/project`, {
            method: "POST",
            headers: { "x-stack-secret-server-key": internal.STACK_SECRET_SERVER_KEY as string },
            body: JSON.stringify({ absolute_file_path: "/raced/stack.config.ts" }),
          }).then((r) => r.json() as Promise<{ project_id: string; created: boolean }>),
        ),
      );
      expect(new Set(racing.map((r) => r.project_id)).size).toBe(1);
      expect(racing.filter((r) => r.created)).toHaveLength(1);
      // Creating projects takes the internal server key: its publishable key is not enough.
      const refused = await fetch(`http://127.0.0.1:${inst.backend}/api/v1/internal/local-emulator/project`, {
        method: "POST",
        headers: { "x-stack-publishable-client-key": internal.STACK_PUBLISHABLE_CLIENT_KEY as string },
        body: JSON.stringify({ absolute_file_path: "/refused/stack.config.ts" }),
      });
      expect(refused.status).toBe(401);

      // Kept on the instance disk: across a saved stop, and across a power-down and cold boot with fresh keys.
      await cli(["stop"], inst.env);
      expect((await cli(["start", "--config-file", configFile], inst.env)).json).toEqual(project);
      await cli(["stop", "--no-save"], inst.env);
      expect((await cli(["start", "--config-file", configFile], inst.env)).json).toEqual(project);
      expect(keysOf(inst).STACK_PUBLISHABLE_CLIENT_KEY).not.toBe(internal.STACK_PUBLISHABLE_CLIENT_KEY);
      expect(await as({ project: project.project_id, publishable: project.publishable_client_key })).toBe(
        200,
      );
    },
    TIMEOUT,
  );

  it(
    "runs three instances at once on free ports of their own, kept for their next start; stop --all ends them",
    async () => {
      const inst = await dev.instance();
      const env = { ...inst.env };
      delete env.STACK_EMULATOR_DASHBOARD_PORT;
      delete env.STACK_EMULATOR_BACKEND_PORT;
      const names = ["one", "two", "three"];
      const pidFile = (name: string) => join(instanceDir(inst, name), "qemu.pid");
      try {
        const ports: Record<string, Record<string, number>> = {};
        for (const name of names) {
          const started = await cli(["--instance", name, "start", "--ports", "auto", "--json"], env);
          ports[name] = Object.fromEntries(
            started.json.services.map((s: { name: string; hostPort: number }) => [s.name, s.hostPort]),
          );
        }
        const all = names.flatMap((name) => Object.values(ports[name] as Record<string, number>));
        expect(new Set(all).size).toBe(6);
        expect(all).not.toContain(26700);
        expect(all).not.toContain(26701);

        for (const name of names) {
          const status = await cli(["--instance", name, "status", "--json"], env);
          expect(status.json.state).toBe("running");
          expect(
            Object.fromEntries(
              status.json.services.map((s: { name: string; hostPort: number }) => [s.name, s.hostPort]),
            ),
          ).toEqual(ports[name]);
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
        ).toEqual([...names].sort().map((name) => [name, "running", ports[name]]));

        const stopped = await cli(["stop", "--all", "--json"], env);
        expect(stopped.json.instances).toHaveLength(3);
        for (const entry of stopped.json.instances)
          expect(entry).toMatchObject({ wasRunning: true, saved: true });
        for (const name of names) expect(runningQemuPid(pidFile(name))).toBeUndefined();

        // The next start, without --ports, comes back on the recorded ports.
        const restarted = await cli(["--instance", "two", "start", "--json"], env);
        expect(restarted.json.boot).toBe("quick-boot");
        expect(
          Object.fromEntries(
            restarted.json.services.map((s: { name: string; hostPort: number }) => [s.name, s.hostPort]),
          ),
        ).toEqual(ports.two);
      } finally {
        await runCli(["stop", "--all", "--no-save"], env);
      }
      for (const name of names) expect(runningQemuPid(pidFile(name))).toBeUndefined();
    },
    TIMEOUT,
  );
});
