import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync, statSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { QgaClient } from "@stack/qga";
import { describe, expect, it } from "vitest";
import { internalClientHeaders, PUBLISHABLE_KEY_NAME as PCK } from "../src/contract/contract.js";
import {
  apiStatus,
  appConfig,
  currentSnapshotDir,
  devImageFixture,
  expectKeysAsReported,
  expectKeysReplaced,
  freePort,
  type Instance,
  instanceFiles,
  keysOf,
  placeholderPublishableKey,
  runCli,
} from "./helpers.js";

const TIMEOUT = 900_000;
const dev = devImageFixture();
let firstInstallKeys: Record<string, string> | undefined;

async function httpStatus(url: string): Promise<number | string> {
  try {
    const res = await fetch(url);
    await res.arrayBuffer();
    return res.status;
  } catch (error) {
    return (error as Error).message;
  }
}

async function start(inst: Instance, extraEnv: NodeJS.ProcessEnv = {}) {
  const result = await runCli(["start", "--json"], { ...inst.env, ...extraEnv });
  expect(result.code, result.stderr).toBe(0);
  return result.json;
}

async function stop(inst: Instance, args: string[] = []) {
  const result = await runCli(["stop", "--json", ...args], inst.env);
  expect(result.code, result.stderr).toBe(0);
  return result.json;
}

function qemuRunning(home: string): boolean {
  try {
    return execFileSync("pgrep", ["-f", home], { encoding: "utf8" }).trim() !== "";
  } catch {
    return false;
  }
}

const sha256 = (file: string) => createHash("sha256").update(readFileSync(file)).digest("hex");

describe("emulator lifecycle with the dev image", () => {
  it(
    "first start captures, serves fresh keys; stop saves; start resumes with the same data and keys; reset forgets",
    async () => {
      const inst = await dev.instance();
      // The RAM of a large guest, kept in the instance's own file between stops, on this small one.
      inst.env.STACK_EMULATOR_INSTANCE_RAM = "file";

      // A second start while the first still works is refused, and the first is unaffected.
      const first = runCli(["start", "--json"], inst.env);
      for (let i = 0; i < 200 && !existsSync(instanceFiles(inst.home).lock); i++) {
        await new Promise((r) => setTimeout(r, 50));
      }
      const second = await runCli(["start", "--json"], inst.env);
      expect(second.code).toBe(75);
      expect(second.json.error.code).toBe("BUSY");
      const firstResult = await first;
      expect(firstResult.code, firstResult.stderr).toBe(0);
      const started = firstResult.json;
      expect(started.boot).toBe("snapshot");
      expect(started.snapshotMethod).toBe("x-ignore-shared");
      expect(started.rotation).toBe("rotated");

      expect(await httpStatus(`http://127.0.0.1:${inst.backend}/health?db=1`)).toBe(200);
      expect(await httpStatus(`http://127.0.0.1:${inst.dashboard}/handler/sign-in`)).toBe(200);

      const keyFile = instanceFiles(inst.home).keys;
      expect(statSync(keyFile).mode & 0o777).toBe(0o600);
      const keys = keysOf(inst);
      // The rotation's payload, in the original's names, and the key in service where the original's CLI reads it.
      expect(Object.keys(keys)).toEqual([
        "STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY",
        "STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY",
        "STACK_SEED_INTERNAL_PROJECT_SUPER_SECRET_ADMIN_KEY",
        "CRON_SECRET",
      ]);
      expect(keys[PCK]).toMatch(/^[0-9a-f]{64}$/);
      const internalPck = instanceFiles(inst.home).internalPck;
      expect(statSync(internalPck).mode & 0o777).toBe(0o600);
      expect(readFileSync(internalPck, "utf8")).toBe(keys[PCK]);
      expect(await apiStatus(inst, keys[PCK] as string)).toBe(200);
      const manifest = JSON.parse(readFileSync(join(dev.imageDir, "image.json"), "utf8"));
      expect(await apiStatus(inst, placeholderPublishableKey())).toBe(401);

      const status = await runCli(["status", "--json"], inst.env);
      expect(status.code).toBe(0);
      expect(status.json.state).toBe("running");
      expect(status.json.vm).toBe("running");
      // The app's own log, from the guest's journal of stack.service.
      const appLog = await runCli(["logs", "--app"], inst.env);
      expect(appLog.code, appLog.stderr).toBe(0);
      expect(appLog.stdout).toContain("trigger-fast-rotate: rotated 4 secrets");
      expect(
        status.json.services.map((s: { name: string; healthy: boolean }) => [s.name, s.healthy]),
      ).toEqual([
        ["dashboard", true],
        ["backend", true],
        ["minio", true],
        ["inbucket", true],
      ]);

      // The runtime config on the disk the CLI wrote is what the guest serves.
      expect((await appConfig(inst)).NEXT_PUBLIC_STACK_DASHBOARD_URL).toBe(
        `http://localhost:${inst.dashboard}`,
      );

      const ramFile = join(currentSnapshotDir(inst.home, manifest.name) as string, "ram");
      const ramDigest = sha256(ramFile);

      // Data survives stop -> start, and so do the keys.
      const put = await fetch(`http://127.0.0.1:${inst.backend}/api/v1/kv/note`, {
        method: "POST",
        body: "kept across stop",
        headers: internalClientHeaders(keys[PCK] as string),
      });
      expect(put.status).toBe(200);
      const stopped = await stop(inst);
      expect(stopped.saved).toBe(true);
      expect(qemuRunning(inst.home)).toBe(false);
      expect(await httpStatus(`http://127.0.0.1:${inst.backend}/health?db=1`)).not.toBe(200);

      const resumed = await start(inst);
      expect(resumed.boot).toBe("quick-boot");
      expect(keysOf(inst)).toEqual(keys);
      const get = await fetch(`http://127.0.0.1:${inst.backend}/api/v1/kv/note`, {
        headers: internalClientHeaders(keys[PCK] as string),
      });
      expect(await get.text()).toContain("kept across stop");

      // The guest clock is corrected after a resume even when the saved state is an hour behind.
      const socketDir = resumed.socketDir as string;
      let qga = await QgaClient.connect(join(socketDir, "qga.sock"), { timeoutMs: 15_000 });
      await qga.setTime(new Date(Date.now() - 3600_000));
      await qga.close();
      // Resumed into the instance's own RAM file: this stop saves device state only, not the RAM.
      await stop(inst);
      const files = instanceFiles(inst.home);
      expect(JSON.parse(readFileSync(files.suspendRecord, "utf8"))).toMatchObject({
        method: "x-ignore-shared",
        ram: { kind: "file", path: files.ram, share: true },
      });
      expect(statSync(files.suspendState).size).toBeLessThan(4 * 1024 * 1024);
      const again = await start(inst);
      expect(again.boot).toBe("quick-boot");
      const kept = await fetch(`http://127.0.0.1:${inst.backend}/api/v1/kv/note`, {
        headers: internalClientHeaders(keys[PCK] as string),
      });
      expect(await kept.text()).toContain("kept across stop");
      qga = await QgaClient.connect(join(again.socketDir, "qga.sock"), { timeoutMs: 15_000 });
      const out = await qga.exec({ path: "/bin/date", args: ["+%s"], captureOutput: true });
      await qga.close();
      expect(Math.abs(Number(out.stdout.toString().trim()) - Date.now() / 1000)).toBeLessThan(2);

      // reset: back to the pristine snapshot, data gone, new keys, old keys dead.
      const reset = await runCli(["reset", "--json"], inst.env);
      expect(reset.code, reset.stderr).toBe(0);
      expect(qemuRunning(inst.home)).toBe(false);
      // A port changed after capture: the resumed guest re-reads its runtime config and advertises the new one.
      const movedDashboard = await freePort();
      inst.env.STACK_EMULATOR_DASHBOARD_PORT = String(movedDashboard);
      inst.dashboard = movedDashboard;
      const fresh = await start(inst);
      expect(fresh.boot).toBe("snapshot");
      expect(await httpStatus(`http://127.0.0.1:${movedDashboard}/handler/sign-in`)).toBe(200);
      expect((await appConfig(inst)).NEXT_PUBLIC_STACK_DASHBOARD_URL).toBe(
        `http://localhost:${movedDashboard}`,
      );
      const newKeys = await expectKeysReplaced(inst, keys);
      const gone = await fetch(`http://127.0.0.1:${inst.backend}/api/v1/kv/note`, {
        headers: internalClientHeaders(newKeys[PCK] as string),
      });
      expect(await gone.text()).not.toContain("kept across stop");

      // Several resumes later the snapshot's RAM file is untouched.
      expect(sha256(ramFile)).toBe(ramDigest);

      firstInstallKeys = newKeys;
      await stop(inst, ["--no-save"]);
      expect(qemuRunning(inst.home)).toBe(false);
      expect(existsSync(join(socketDir, "qmp.sock"))).toBe(false);
    },
    TIMEOUT,
  );

  it(
    "gives a second install its own keys; EMULATOR_NO_ROTATION keeps the placeholders, loudly, and only once",
    async () => {
      const inst = await dev.instance();
      const rotated = await start(inst);
      await expectKeysAsReported(inst.backend, rotated);
      const keys = keysOf(inst);
      expect(firstInstallKeys).toBeDefined();
      for (const name of Object.keys(keys)) expect(keys[name]).not.toBe(firstInstallKeys?.[name]);
      expect(new Set(Object.values(keys)).size).toBe(4);

      // A cold boot from the instance disk without rotation: the keys file of the last start no longer applies.
      await stop(inst, ["--no-save"]);
      const unrotated = await runCli(["start", "--json"], { ...inst.env, EMULATOR_NO_ROTATION: "1" });
      expect(unrotated.code, unrotated.stderr).toBe(0);
      expect(unrotated.json).toMatchObject({ boot: "cold", rotation: "skipped" });
      expect(unrotated.stderr).toMatch(/EMULATOR_NO_ROTATION=1.*PUBLIC placeholder/);
      await expectKeysAsReported(inst.backend, unrotated.json);
      expect(existsSync(instanceFiles(inst.home).keys)).toBe(false);
      // The original's CLI reads the key in service from internal-pck: here the placeholder.
      expect(readFileSync(instanceFiles(inst.home).internalPck, "utf8")).toBe(placeholderPublishableKey());
      const placeholderStatus = await runCli(["status"], inst.env);
      expect(placeholderStatus.stdout).toMatch(/keys +PUBLIC placeholders/);

      // Saved with the placeholders, resumed by a plain start: rotated now, and status says what is true.
      await stop(inst);
      const resumed = await start(inst);
      expect(resumed).toMatchObject({ boot: "quick-boot", rotation: "rotated" });
      await expectKeysAsReported(inst.backend, resumed);
      const status = await runCli(["status", "--json"], inst.env);
      expect(status.json).toMatchObject({ rotation: "rotated", keysFile: resumed.keysFile });
      await stop(inst, ["--no-save"]);
    },
    TIMEOUT,
  );

  it(
    "honours the original's variables: EMULATOR_BACKEND_PORT, EMULATOR_RAM and EMULATOR_CPUS",
    async () => {
      const inst = await dev.instance();
      const backend = await freePort();
      const env: NodeJS.ProcessEnv = {
        ...inst.env,
        EMULATOR_BACKEND_PORT: String(backend),
        EMULATOR_RAM: "320",
        EMULATOR_CPUS: "1",
      };
      delete env.STACK_EMULATOR_BACKEND_PORT;
      const started = await runCli(["start", "--json"], env);
      expect(started.code, started.stderr).toBe(0);
      expect(started.json.services.find((s: { name: string }) => s.name === "backend").hostPort).toBe(
        backend,
      );
      expect(await httpStatus(`http://127.0.0.1:${backend}/health?db=1`)).toBe(200);
      expect((await appConfig({ ...inst, backend })).NEXT_PUBLIC_STACK_API_URL).toBe(
        `http://localhost:${backend}`,
      );
      const qga = await QgaClient.connect(join(started.json.socketDir, "qga.sock"), { timeoutMs: 15_000 });
      try {
        const meminfo = await qga.exec({ path: "/bin/cat", args: ["/proc/meminfo"] });
        const totalKiB = Number(/MemTotal:\s+(\d+)/.exec(meminfo.stdout.toString())?.[1]);
        expect(totalKiB).toBeGreaterThan(256 * 1024);
        expect(totalKiB).toBeLessThanOrEqual(320 * 1024);
        const cpus = await qga.exec({ path: "/bin/cat", args: ["/sys/devices/system/cpu/online"] });
        expect(cpus.stdout.toString().trim()).toBe("0");
      } finally {
        await qga.close();
      }
      await stop({ ...inst, env }, ["--no-save"]);
    },
    TIMEOUT,
  );

  it(
    "refuses a busy port and an invalid port, changing nothing",
    async () => {
      const inst = await dev.instance();
      const blocker = createServer().listen(inst.backend, "127.0.0.1");
      await new Promise((r) => blocker.once("listening", r));
      try {
        const busy = await runCli(["start", "--json"], inst.env);
        expect(busy.code).toBe(1);
        expect(busy.json.error.code).toBe("PORT_IN_USE");
        expect(busy.stderr).toContain(`backend on 127.0.0.1:${inst.backend}`);
      } finally {
        blocker.close();
      }
      const invalid = await runCli(["start", "--json"], {
        ...inst.env,
        STACK_EMULATOR_BACKEND_PORT: "70000",
      });
      expect(invalid.json.error.code).toBe("INVALID_PORT");
      expect(existsSync(instanceFiles(inst.home).state)).toBe(false);
      expect(existsSync(instanceFiles(inst.home).disk)).toBe(false);
      expect(qemuRunning(inst.home)).toBe(false);
    },
    TIMEOUT,
  );
});
