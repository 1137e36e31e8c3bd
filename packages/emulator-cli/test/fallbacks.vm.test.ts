import { cpSync, existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { QgaClient } from "@stack/qga";
import { describe, expect, it } from "vitest";
import {
  currentSnapshotDir,
  devImageFixture,
  expectKeysAsReported,
  instanceFiles,
  runCli,
  runningQemuPid,
  tempHome,
} from "./helpers.js";

const TIMEOUT = 600_000;
const dev = devImageFixture();

async function instanceEnv(): Promise<NodeJS.ProcessEnv> {
  return (await dev.instance()).env;
}

async function startOk(env: NodeJS.ProcessEnv) {
  const result = await runCli(["start", "--json"], env);
  expect(result.code, result.stderr).toBe(0);
  const backend = Number(env.STACK_EMULATOR_BACKEND_PORT);
  const health = await fetch(`http://127.0.0.1:${backend}/health?db=1`);
  expect(health.status).toBe(200);
  await expectKeysAsReported(backend, result.json);
  return result;
}

const snapshotDir = (env: NodeJS.ProcessEnv) =>
  currentSnapshotDir(env.STACK_EMULATOR_HOME as string, dev.imageName) as string;
const pidFileOf = (env: NodeJS.ProcessEnv) => instanceFiles(env.STACK_EMULATOR_HOME as string).pidFile;

describe("every fast-path failure ends healthy, with the reason reported", () => {
  it(
    "a corrupted snapshot is recaptured",
    async () => {
      const env = await instanceEnv();
      const capture = await runCli(["capture", "--json"], env);
      expect(capture.code, capture.stderr).toBe(0);
      const state = join(snapshotDir(env), "state");
      const bytes = readFileSync(state);
      bytes.fill(0x5a, 0, Math.min(bytes.length, 4096));
      writeFileSync(state, bytes);
      const result = await startOk(env);
      expect(result.json.fallbackReason).toMatch(/resuming the snapshot failed/);
      expect(result.json.boot).toBe("snapshot");
      const status = await runCli(["status", "--json"], env);
      expect(status.json.fallbackReason).toMatch(/recapturing/);
    },
    TIMEOUT,
  );

  it(
    "a snapshot taken with another RAM size is not resumed",
    async () => {
      const env = await instanceEnv();
      expect((await runCli(["capture"], env)).code).toBe(0);
      const bigger = join(tempHome("se-img-"), "dev-bigger");
      cpSync(dev.imageDir, bigger, { recursive: true });
      const manifest = JSON.parse(readFileSync(join(bigger, "image.json"), "utf8"));
      manifest.memoryMiB += 64;
      writeFileSync(join(bigger, "image.json"), JSON.stringify(manifest));
      const result = await startOk({ ...env, STACK_EMULATOR_IMAGE: bigger });
      expect(result.json.fallbackReason).toMatch(/memoryMiB \d+ -> \d+/);
    },
    TIMEOUT,
  );

  it(
    "a guest agent that does not answer after a resume leads to a cold boot from the instance disk",
    async () => {
      const env = await instanceEnv();
      const first = await startOk(env);
      // Silence the agent inside the guest, then save that state: the next resume finds nobody answering.
      const qga = await QgaClient.connect(join(first.json.socketDir, "qga.sock"), { timeoutMs: 15_000 });
      await qga.exec({
        path: "/bin/sh",
        args: ["-c", "(sleep 1; kill -STOP $(pidof qemu-ga)) >/dev/null 2>&1 &"],
      });
      await qga.close();
      await new Promise((r) => setTimeout(r, 2000));
      expect((await runCli(["stop"], env)).code).toBe(0);
      const result = await startOk({ ...env, STACK_EMULATOR_AGENT_TIMEOUT: "5" });
      expect(result.json.boot).toBe("cold");
      expect(result.json.fallbackReason).toMatch(/resuming the saved state failed/);
      expect(result.json.rotation).toBe("rotated");
    },
    TIMEOUT,
  );

  it(
    "kill -9 of QEMU during capture leaves no broken snapshot, and the start still ends healthy",
    async () => {
      const env = await instanceEnv();
      const home = env.STACK_EMULATOR_HOME as string;
      const pending = runCli(["start", "--json"], env);
      const pidFile = pidFileOf(env);
      const staging = () =>
        existsSync(join(home, "snapshots")) &&
        readdirSync(join(home, "snapshots")).some((n) => n.startsWith(".staging-"));
      let pid: number | undefined;
      for (let i = 0; i < 600 && pid === undefined; i++) {
        if (staging()) pid = runningQemuPid(pidFile);
        if (pid === undefined) await new Promise((r) => setTimeout(r, 50));
      }
      expect(staging()).toBe(true);
      expect(pid).toBeGreaterThan(1);
      process.kill(pid as number, "SIGKILL");
      const result = await pending;
      expect(result.code, result.stderr).toBe(0);
      expect(result.json.fallbackReason).toMatch(/capture or resume failed/);
      expect(currentSnapshotDir(home, dev.imageName)).toBeUndefined();
      expect(readdirSync(join(home, "snapshots")).filter((n) => n.startsWith(".staging-"))).toEqual([]);
    },
    TIMEOUT,
  );

  it(
    "a QEMU killed with -9 is noticed by status and recovered by the next start",
    async () => {
      const env = await instanceEnv();
      const first = await startOk(env);
      const pid = runningQemuPid(pidFileOf(env));
      expect(pid).toBe(first.json.qemu.pid);
      process.kill(pid as number, "SIGKILL");
      await new Promise((r) => setTimeout(r, 500));
      const status = await runCli(["status", "--json"], env);
      expect(status.json.state).toBe("broken");
      expect(status.code).toBe(1);
      const again = await startOk(env);
      expect(again.stderr).toMatch(/is gone; cleaning up/);
    },
    TIMEOUT,
  );
});

describe("an instance of the previous version", () => {
  it(
    "whose saved state was recorded by it is not resumed on a device layout it lacks: it boots from its disk, data kept, and says why",
    async () => {
      const env = await instanceEnv();
      await startOk(env);
      const backend = Number(env.STACK_EMULATOR_BACKEND_PORT);
      const keys = JSON.parse(
        JSON.stringify((await runCli(["env", "--json", "--prefix", "none"], env)).json),
      );
      const stored = await fetch(`http://127.0.0.1:${backend}/api/v1/kv/kept`, {
        method: "POST",
        headers: {
          "x-stack-project-id": "internal",
          "x-stack-access-type": "client",
          "x-stack-publishable-client-key": keys.STACK_PUBLISHABLE_CLIENT_KEY,
        },
        body: "from the previous version",
      });
      expect(stored.status).toBe(200);
      expect((await runCli(["stop", "--json"], env)).json.saved).toBe(true);
      // What the previous version wrote: a fingerprint without the port prefix, of device layout 3.
      const files = instanceFiles(env.STACK_EMULATOR_HOME as string);
      const record = JSON.parse(readFileSync(files.suspendRecord, "utf8"));
      delete record.fingerprint.portPrefix;
      record.fingerprint.deviceLayout = 3;
      writeFileSync(files.suspendRecord, JSON.stringify(record));

      const result = await startOk(env);
      expect(result.json.boot).toBe("cold");
      expect(result.stderr).toMatch(
        /the saved state cannot be resumed \(deviceLayout 3 -> 4, portPrefix undefined -> 81\)/,
      );
      const fresh = (await runCli(["env", "--json", "--prefix", "none"], env)).json;
      const kept = await fetch(`http://127.0.0.1:${backend}/api/v1/kv/kept`, {
        headers: {
          "x-stack-project-id": "internal",
          "x-stack-access-type": "client",
          "x-stack-publishable-client-key": fresh.STACK_PUBLISHABLE_CLIENT_KEY,
        },
      });
      expect(await kept.text()).toBe("from the previous version");
    },
    TIMEOUT,
  );
});

describe("refusals", () => {
  it(
    "says QEMU is missing, and how to install it, on a host without it",
    async () => {
      const env = await instanceEnv();
      // A private mount namespace hides the distro's QEMU binary from this one CLI run; PATH has no QEMU either.
      const result = await runCli(["start", "--json"], { ...env, PATH: "/nonexistent" }, { hideQemu: true });
      expect(result.code).toBe(1);
      expect(result.stderr).toMatch(/qemu-system-x86_64/);
      expect(result.stderr).toMatch(/apt-get install|install/);
      expect(existsSync(instanceFiles(env.STACK_EMULATOR_HOME as string).state)).toBe(false);
    },
    TIMEOUT,
  );

  it(
    "rejects an unknown image",
    async () => {
      const env = await instanceEnv();
      const result = await runCli(["start", "--json", "--image", "nonsense"], env);
      expect(result.code).toBe(1);
      expect(result.json.error.code).toBe("UNKNOWN_IMAGE");
    },
    TIMEOUT,
  );
});
