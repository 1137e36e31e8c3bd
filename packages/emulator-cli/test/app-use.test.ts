import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { type AppConnection, composeAppEnv, formatDotenv } from "../src/app/app-env.js";
import { childCommand } from "../src/app/run-child.js";
import { buildSettings } from "../src/cli/settings.js";
import type { EmulatorError } from "../src/core/errors.js";
import { instancePaths, resolveHome } from "../src/core/paths.js";
import { checkPortsFree, describePortOwner, type ServiceSpec } from "../src/core/ports.js";
import { identify, type ProcessIdentity } from "../src/core/process-identity.js";
import { writeState } from "../src/instance/instance-state.js";
import { assignPorts, type PortPlanInput, planPorts } from "../src/instance/port-assignment.js";
import type { Fingerprint } from "../src/vm/snapshot.js";

const connection: AppConnection = {
  projectId: "internal",
  publishableClientKey: "a".repeat(64),
  secretServerKey: "b".repeat(64),
  apiUrl: "http://127.0.0.1:26701",
};

const services: ServiceSpec[] = [
  { name: "dashboard", guestPort: 8101, defaultHostPort: 26700, portEnv: "STACK_EMULATOR_DASHBOARD_PORT" },
  { name: "backend", guestPort: 8102, defaultHostPort: 26701, portEnv: "STACK_EMULATOR_BACKEND_PORT" },
];

const homes: string[] = [];

/** A TCP server holding a free port of 127.0.0.1. */
async function listening(): Promise<{ server: Server; port: number }> {
  const server = createServer();
  await new Promise<void>((resolvePromise) => server.listen(0, "127.0.0.1", resolvePromise));
  return { server, port: (server.address() as { port: number }).port };
}

afterAll(() => {
  for (const home of homes) rmSync(home, { recursive: true, force: true });
});

describe("the app's environment", () => {
  it("gives every public value each framework prefix and the secret server key none", () => {
    const env = composeAppEnv(connection);
    for (const prefix of ["", "NEXT_PUBLIC_", "VITE_", "EXPO_PUBLIC_"]) {
      expect(env[`${prefix}STACK_PROJECT_ID`]).toBe("internal");
      expect(env[`${prefix}STACK_PUBLISHABLE_CLIENT_KEY`]).toBe(connection.publishableClientKey);
      expect(env[`${prefix}STACK_API_URL`]).toBe(connection.apiUrl);
    }
    expect(env.STACK_SECRET_SERVER_KEY).toBe(connection.secretServerKey);
    const secretNames = Object.keys(env).filter((name) => env[name] === connection.secretServerKey);
    expect(secretNames).toEqual(["STACK_SECRET_SERVER_KEY"]);
    expect(Object.keys(env)).toHaveLength(13);
  });

  it("narrows the public names to one prefix set, keeping the server key", () => {
    expect(Object.keys(composeAppEnv(connection, "next")).sort()).toEqual([
      "NEXT_PUBLIC_STACK_API_URL",
      "NEXT_PUBLIC_STACK_PROJECT_ID",
      "NEXT_PUBLIC_STACK_PUBLISHABLE_CLIENT_KEY",
      "STACK_SECRET_SERVER_KEY",
    ]);
    expect(Object.keys(composeAppEnv(connection, "none")).sort()).toEqual([
      "STACK_API_URL",
      "STACK_PROJECT_ID",
      "STACK_PUBLISHABLE_CLIENT_KEY",
      "STACK_SECRET_SERVER_KEY",
    ]);
    expect(Object.keys(composeAppEnv(connection, "expo"))).toContain("EXPO_PUBLIC_STACK_API_URL");
  });

  it('writes KEY="value" lines that a shell evaluates back to the same values', () => {
    const tricky = { PLAIN: "http://127.0.0.1:1", QUOTES: 'say "hi"', SHELLY: "$HOME `id` \\n" };
    const text = formatDotenv(tricky);
    expect(text.split("\n")[0]).toBe('PLAIN="http://127.0.0.1:1"');
    const out = execFileSync(
      "/bin/sh",
      ["-c", `eval "$(cat)"; printf '%s\\n' "$PLAIN" "$QUOTES" "$SHELLY"`],
      {
        input: text,
        encoding: "utf8",
      },
    );
    expect(out).toBe(`${Object.values(tricky).join("\n")}\n`);
  });
});

describe("run's command", () => {
  it("runs one operand through the shell, and anything after -- or several operands without", () => {
    expect(childCommand(["npm run dev"], false)).toEqual({ shell: "npm run dev" });
    expect(childCommand(["node", "-e", "1"], true)).toEqual({ file: "node", args: ["-e", "1"] });
    expect(childCommand(["echo hi"], true)).toEqual({ file: "echo hi", args: [] });
    expect(childCommand(["npm", "test"], false)).toEqual({ file: "npm", args: ["test"] });
    expect(() => childCommand([], false)).toThrow(/needs a command/);
  });
});

/** A port plan over fake ports: `busy` are taken, picks count up from 40000. */
function plan(overrides: Partial<PortPlanInput> & { busy?: number[] } = {}) {
  const busy = new Set(overrides.busy ?? []);
  let next = 40000;
  return planPorts({
    services,
    given: {},
    instance: "default",
    reserved: new Set(),
    isFree: async (port) => !busy.has(port),
    pickFree: async (taken) => {
      while (taken.has(next) || busy.has(next)) next++;
      return next++;
    },
    ...overrides,
  });
}

describe("port picking", () => {
  it("uses the defaults, leaving a busy one for the start to report", async () => {
    expect((await plan()).ports).toEqual({ dashboard: 26700, backend: 26701 });
    const busyDefault = await plan({ busy: [26701] });
    expect(busyDefault.ports).toEqual({ dashboard: 26700, backend: 26701 });
    expect(busyDefault.record).toBeUndefined();
  });

  it("with auto picks distinct free ports outside other instances' ports and records them", async () => {
    const result = await plan({ mode: "auto", reserved: new Set([40000, 40002]) });
    expect(result.ports).toEqual({ dashboard: 40001, backend: 40003 });
    expect(result.record).toEqual(result.ports);
  });

  it("reuses recorded ports, re-picking under auto only the ones now taken", async () => {
    const recorded = { dashboard: 41000, backend: 41001 };
    expect((await plan({ recorded })).ports).toEqual(recorded);
    expect((await plan({ recorded, mode: "auto", busy: [41001] })).ports).toEqual({
      dashboard: 41000,
      backend: 40000,
    });
    expect((await plan({ recorded, mode: "default" })).record).toBe("forget");
  });

  it("goes auto by itself for another instance whose default ports are taken, saying so", async () => {
    const result = await plan({ instance: "second", busy: [26700] });
    expect(result.ports).toEqual({ dashboard: 40000, backend: 40001 });
    expect(result.note).toMatch(/26700.*taken.*second/);
    expect((await plan({ instance: "second" })).ports).toEqual({ dashboard: 26700, backend: 26701 });
  });

  it("uses a port given by its variable as it is, over the record", async () => {
    const given = { backend: { port: 31001, from: "STACK_EMULATOR_BACKEND_PORT" } };
    const result = await plan({ given, recorded: { dashboard: 41000, backend: 41001 } });
    expect(result.ports).toEqual({ dashboard: 41000, backend: 31001 });
    expect(result.record).toBeUndefined();
  });

  it("makes every port automatic under --ports auto, ports given by variables included (a flag beats a variable)", async () => {
    const given = { backend: { port: 31001, from: "STACK_EMULATOR_BACKEND_PORT" } };
    const result = await plan({ mode: "auto", given, busy: [31001] });
    expect(result.ports).toEqual({ dashboard: 40000, backend: 40001 });
    expect(result.record).toEqual(result.ports);
    // --ports default: the image's ports, the variable's too.
    expect((await plan({ mode: "default", given })).ports).toEqual({ dashboard: 26700, backend: 26701 });
  });

  it("reads the original's EMULATOR_*_PORT names as given ports, this project's name winning", () => {
    const given = (env: NodeJS.ProcessEnv) => buildSettings({}, env).ports.given;
    expect(given({ EMULATOR_BACKEND_PORT: "31002" }).backend).toEqual({
      port: 31002,
      from: "EMULATOR_BACKEND_PORT",
    });
    expect(given({ EMULATOR_BACKEND_PORT: "31002", STACK_EMULATOR_BACKEND_PORT: "31004" }).backend).toEqual({
      port: 31004,
      from: "STACK_EMULATOR_BACKEND_PORT",
    });
  });

  it("records auto ports in the instance directory and reuses them on the next start", async () => {
    const home = mkdtempSync(join(tmpdir(), "se-ports-"));
    homes.push(home);
    const paths = instancePaths(resolveHome(home), "b");
    const input = { services, given: {}, instance: "b", reserved: new Set<number>() };
    const warnings: string[] = [];
    const warn = (message: string) => warnings.push(message);
    const first = await assignPorts(paths, { ...input, mode: "auto" }, warn);
    const record = JSON.parse(readFileSync(paths.ports, "utf8"));
    expect(record).toEqual({ version: 1, ports: first.ports });
    expect((await assignPorts(paths, input, warn)).ports).toEqual(first.ports);
    await assignPorts(paths, { ...input, mode: "default" }, warn);
    expect(() => readFileSync(paths.ports)).toThrow();
    expect(warnings).toEqual([]);
  });

  it("counts the ports its own running VM forwards as free: an instance that runs but does not serve keeps its ports", async () => {
    const home = mkdtempSync(join(tmpdir(), "se-ports-"));
    homes.push(home);
    const paths = instancePaths(resolveHome(home), "b");
    mkdirSync(paths.dir, { recursive: true });
    // The VM's forwards, held for real; this test process stands in for its QEMU.
    const held = await Promise.all(services.map(() => listening()));
    const ownServices = services.map((service, i) => ({
      ...service,
      defaultHostPort: held[i]?.port as number,
    }));
    const defaults = Object.fromEntries(
      ownServices.map((service) => [service.name, service.defaultHostPort]),
    );
    const running = (qemu: ProcessIdentity) =>
      writeState(paths, {
        version: 1,
        name: "b",
        image: { selector: "dev", name: "dev", dir: home, digest: "sha256:0" },
        qemu: { ...qemu, binary: "qemu-system-x86_64", version: "7.2.0" },
        accel: "tcg",
        services: ownServices.map((service) => ({ ...service, hostPort: service.defaultHostPort })),
        boot: "cold",
        suspendFingerprint: {} as Fingerprint,
        rotation: "rotated",
        configHash: "0",
        startedAt: new Date().toISOString(),
        readyMs: 1,
        socketDir: home,
      });
    const input = { services: ownServices, given: {}, instance: "b", reserved: new Set<number>() };
    try {
      const self = identify(process.pid) as ProcessIdentity;
      running(self);
      const plan = await assignPorts(paths, input, () => {});
      expect(plan).toEqual({ ports: defaults, record: undefined });
      // The same ports held by a process that is not the instance's QEMU are taken: the instance moves.
      running({ ...self, startTime: "1" });
      const moved = await assignPorts(paths, input, () => {});
      expect(moved.note).toMatch(/is taken/);
      expect(moved.ports).not.toEqual(defaults);
    } finally {
      for (const { server } of held) server.close();
    }
  });

  it("sets an unreadable record aside with one warning naming the file, and picks again", async () => {
    const home = mkdtempSync(join(tmpdir(), "se-ports-"));
    homes.push(home);
    const paths = instancePaths(resolveHome(home), "b");
    mkdirSync(paths.dir, { recursive: true });
    writeFileSync(paths.ports, JSON.stringify({ version: 1, ports: { dashboard: "abc" } }));
    const warnings: string[] = [];
    const input = { services, given: {}, instance: "b", reserved: new Set<number>() };
    const plan = await assignPorts(paths, { ...input, mode: "auto" }, (message) => warnings.push(message));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain(paths.ports);
    expect(warnings[0]).not.toMatch(/STACK_EMULATOR_/);
    expect(readFileSync(`${paths.ports}.unreadable`, "utf8")).toContain("abc");
    expect(Number.isInteger(plan.ports.dashboard)).toBe(true);
  });
});

describe("port conflicts", () => {
  it("name an emulator's own QEMU by its instance", () => {
    const proc = mkdtempSync(join(tmpdir(), "se-proc-"));
    homes.push(proc);
    mkdirSync(join(proc, "net"));
    mkdirSync(join(proc, "4242", "fd"), { recursive: true });
    const header =
      "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";
    const listener =
      "   0: 0100007F:6856 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 31337\n";
    writeFileSync(join(proc, "net", "tcp"), header + listener);
    symlinkSync("socket:[31337]", join(proc, "4242", "fd", "7"));
    writeFileSync(
      join(proc, "4242", "cmdline"),
      "qemu-system-x86_64\0-pidfile\0/h/instances/feature-x/qemu.pid\0",
    );
    expect(describePortOwner(0x6856, proc)).toBe("pid 4242 (the QEMU of stack-emulator instance feature-x)");
    expect(describePortOwner(0x6857, proc)).toBeUndefined();
  });

  it("name the process that listens on the port", async () => {
    const { server, port } = await listening();
    try {
      expect(describePortOwner(port)).toMatch(new RegExp(`^pid ${process.pid} \\(`));
      let error: EmulatorError | undefined;
      try {
        await checkPortsFree([{ ...services[1], hostPort: port } as never]);
      } catch (caught) {
        error = caught as EmulatorError;
      }
      expect(error?.code).toBe("PORT_IN_USE");
      expect(error?.message).toContain(
        `backend on 127.0.0.1:${port} (STACK_EMULATOR_BACKEND_PORT) by pid ${process.pid}`,
      );
      expect(error?.hint).toContain("--ports auto");
    } finally {
      server.close();
    }
    expect(describePortOwner(port)).toBeUndefined();
  });
});
