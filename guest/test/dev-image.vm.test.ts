import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { QgaClient } from "@stack/qga";
import { memoryBackendArgs, QmpClient, restoreVmState, saveVmState } from "@stack/qmp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type BuildResult,
  bootDevImage,
  buildDevImage,
  configIso,
  type DevVm,
  type Manifest,
  readManifest,
} from "./dev-vm.js";

/**
 * Builds the dev image into a temporary directory, boots it with QEMU directly (TCG, as the CLI does on this kind of
 * host) with a config ISO written by @stack/iso9660, and checks the guest contract from the outside: HTTP on the
 * forwarded ports, rotation and config through the real guest agent.
 */
const BUILD_TIMEOUT_MS = 600_000;
const BOOT_TIMEOUT_MS = 240_000;
const SECRET_NAMES = [
  "STACK_PUBLISHABLE_CLIENT_KEY",
  "STACK_SECRET_SERVER_KEY",
  "STACK_SUPER_SECRET_ADMIN_KEY",
  "CRON_SECRET",
] as const;
const PLACEHOLDER_PCK = `${"0".repeat(32)}${"f".repeat(32)}`;
const ROTATE = "/usr/local/bin/trigger-fast-rotate";

function hex(seed: string): string {
  return createHash("sha256").update(seed).digest("hex");
}

function secretsInput(values: Record<string, string>): string {
  return Object.entries(values)
    .map(([key, value]) => `${key}=${value}\n`)
    .join("");
}

// One build for the whole file, shared by both scenarios.
let buildDir: string;
let image: BuildResult;
beforeAll(async () => {
  buildDir = await mkdtemp(join(tmpdir(), "dev-image-build-"));
  image = await buildDevImage(join(buildDir, "image"));
}, BUILD_TIMEOUT_MS);
afterAll(async () => {
  if (buildDir) await rm(buildDir, { recursive: true, force: true });
});

/** Runs `fn` with a guest agent client connected to `vm`, closed afterwards. */
async function withAgent<T>(vm: DevVm, fn: (client: QgaClient) => Promise<T>): Promise<T> {
  const client = await QgaClient.connect(vm.qgaSocket, { timeoutMs: 60_000, execTimeoutMs: 120_000 });
  try {
    return await fn(client);
  } finally {
    await client.close();
  }
}

describe("the offline dev image", () => {
  let dir: string;
  let manifest: Manifest;
  let vm: DevVm | undefined;
  let isoPath: string;
  const dashboardUrl = `http://dashboard-${process.pid}.test:26700`;
  // The publishable client key in force; the rotation test moves it on.
  let current = PLACEHOLDER_PCK;

  const url = (service: "dashboard" | "backend", path: string) => vm!.url(service, path);
  const status = (service: "dashboard" | "backend", path: string, key?: string) =>
    vm!.status(service, path, key);

  const guest = <T>(fn: (client: QgaClient) => Promise<T>) => withAgent(vm!, fn);

  async function rotate(input: string) {
    return guest((client) => client.exec({ path: ROTATE, stdin: input }));
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "dev-image-test-"));
    manifest = await readManifest(image.path);
    isoPath = join(dir, "config.iso");
    await writeFile(isoPath, await configIso({ STACK_DASHBOARD_URL: dashboardUrl, STACK_EXAMPLE: "first" }));
    vm = await bootDevImage({ imageDir: image.path, dir, isoPath });
    await vm.waitHealthy(BOOT_TIMEOUT_MS);
  }, BOOT_TIMEOUT_MS);

  afterAll(async () => {
    await vm?.kill();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("writes a manifest that follows the image contract, with a digest over the content", async () => {
    expect(manifest).toMatchObject({
      schema: 1,
      name: "stack-emulator-dev",
      arch: "amd64",
      boot: { initrd: "initrd.img" },
      disk: "disk.qcow2",
      configIso: { volumeId: "STACKCFG" },
      guest: {
        rotateSecrets: "/usr/local/bin/trigger-fast-rotate",
        applyConfig: "/usr/local/bin/apply-runtime-config",
        waitReady: "/usr/local/bin/wait-for-stack-ready",
      },
      secrets: [...SECRET_NAMES],
    });
    // vmlinuz only where the host lacks xz to unpack the kernel's ELF image.
    expect(["vmlinux", "vmlinuz"]).toContain(manifest.boot.kernel);
    expect(manifest.boot.append).toContain("console=ttyS0");
    expect(manifest.services).toEqual([
      expect.objectContaining({
        name: "dashboard",
        guestPort: 8101,
        defaultHostPort: 26700,
        health: "/handler/sign-in",
      }),
      expect.objectContaining({
        name: "backend",
        guestPort: 8102,
        defaultHostPort: 26701,
        health: "/health?db=1",
      }),
    ]);
    expect(manifest.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(image.digest).toBe(manifest.digest);
    expect(image.cached).toBe(false);
    for (const file of [manifest.boot.kernel, manifest.boot.initrd, manifest.disk]) {
      expect((await stat(join(image.path, file))).size).toBeGreaterThan(0);
    }
  });

  it("reuses the image on a second build with the same inputs, and rebuilds it identically", async () => {
    expect(await buildDevImage(image.path)).toEqual({ ...image, cached: true });
    const again = await buildDevImage(join(buildDir, "image-again"));
    expect(again).toEqual({ path: join(buildDir, "image-again"), digest: image.digest, cached: false });
  });

  it("answers on both health endpoints", async () => {
    expect(await status("backend", "/health?db=1")).toBe(200);
    expect(await status("dashboard", "/handler/sign-in")).toBe(200);
  });

  it("reads the config ISO written by @stack/iso9660 through the guest kernel", async () => {
    const config = (await (await fetch(url("backend", "/api/v1/config"))).json()) as Record<string, string>;
    expect(config).toMatchObject({ STACK_DASHBOARD_URL: dashboardUrl, STACK_EXAMPLE: "first" });
    const page = await (await fetch(url("dashboard", "/handler/sign-in"))).text();
    expect(page).toContain(dashboardUrl);
    const mounts = await guest((client) => client.exec({ path: "/bin/cat", args: ["/proc/mounts"] }));
    expect(mounts.stdout.toString()).toMatch(/ \/mnt\/config iso9660 ro/);
  });

  it("accepts only the current publishable client key, the placeholder at first boot", async () => {
    expect(await status("backend", "/api/v1/projects/current", PLACEHOLDER_PCK)).toBe(200);
    expect(await status("backend", "/api/v1/projects/current", hex("wrong"))).toBe(401);
    expect(await status("backend", "/api/v1/projects/current")).toBe(401);
  });

  it("stores values on the data disk, behind the key", async () => {
    const key = current;
    const put = await fetch(url("backend", "/api/v1/kv/greeting"), {
      method: "POST",
      headers: { "x-stack-publishable-client-key": key },
      body: "hello from the host\n",
    });
    expect(put.status).toBe(200);
    const got = await fetch(url("backend", "/api/v1/kv/greeting"), {
      headers: { "x-stack-publishable-client-key": key },
    });
    expect(got.status).toBe(200);
    expect(await got.text()).toBe("hello from the host\n");
    expect(await status("backend", "/api/v1/kv/greeting")).toBe(401);
    expect(await status("backend", "/api/v1/kv/absent", key)).toBe(404);
    const onDisk = await guest((client) => client.exec({ path: "/bin/cat", args: ["/data/kv/greeting"] }));
    expect(onDisk.stdout.toString()).toBe("hello from the host\n");
  });

  it("rotates the secrets through the guest agent: the new key works, the old one stops working", async () => {
    const values = Object.fromEntries(SECRET_NAMES.map((name) => [name, hex(`${name}-rotated`)]));
    const result = await rotate(secretsInput(values));
    expect(result.stderr.toString()).toBe("");
    expect(result.exitCode).toBe(0);
    const newKey = values.STACK_PUBLISHABLE_CLIENT_KEY!;
    expect(await status("backend", "/api/v1/projects/current", newKey)).toBe(200);
    expect(await status("backend", "/api/v1/projects/current", PLACEHOLDER_PCK)).toBe(401);
    current = newKey;
    const mode = await guest((client) =>
      client.exec({ path: "/bin/stat", args: ["-c", "%a", "/run/stack/secrets.env"] }),
    );
    expect(mode.stdout.toString().trim()).toBe("600");
  });

  it("rejects bad rotation input with a message, changing nothing", async () => {
    const good = Object.fromEntries(SECRET_NAMES.map((name) => [name, hex(`${name}-never-applied`)]));
    const badValue = "g".repeat(64);
    const { CRON_SECRET: _, ...withoutCron } = good;
    const cases: [string, string][] = [
      ["not hex", secretsInput({ ...good, STACK_SECRET_SERVER_KEY: badValue })],
      ["uppercase hex", secretsInput({ ...good, CRON_SECRET: hex("upper").toUpperCase() })],
      ["too short", secretsInput({ ...good, STACK_PUBLISHABLE_CLIENT_KEY: "abcd" })],
      ["unknown key", `${secretsInput(good)}STACK_SOMETHING_ELSE=${hex("x")}\n`],
      ["duplicate key", `${secretsInput(good)}CRON_SECRET=${hex("again")}\n`],
      ["missing key", secretsInput(withoutCron)],
      ["no equals sign", `${secretsInput(good)}just-a-line\n`],
      ["empty input", ""],
    ];
    for (const [label, input] of cases) {
      const result = await rotate(input);
      expect(result.exitCode, label).toBe(2);
      const message = result.stderr.toString();
      expect(message, label).toContain("nothing was changed");
      expect(message, label).not.toContain(badValue);
      expect(message, label).not.toContain(good.STACK_SECRET_SERVER_KEY);
    }
    expect(await status("backend", "/api/v1/projects/current", current)).toBe(200);
    expect(await status("backend", "/api/v1/projects/current", good.STACK_PUBLISHABLE_CLIENT_KEY)).toBe(401);
  });

  it("re-applies a replaced config ISO on demand, reading the new contents", async () => {
    // The same inode rewritten in place stands in for the ISO swapped behind the drive during a resume: QEMU
    // reads the new bytes, the guest still has the old ones cached.
    const replacement = await configIso({
      STACK_DASHBOARD_URL: dashboardUrl,
      STACK_EXAMPLE: "second",
      OTHER_NAME: "not config",
      STACK_SECRET_SERVER_KEY: hex("never through config"),
    });
    expect(replacement.length).toBe((await stat(isoPath)).size);
    await writeFile(isoPath, replacement);
    const result = await guest((client) => client.exec({ path: manifest.guest.applyConfig }));
    expect(result.stderr.toString()).toMatch(/line 3 ignored.*\n.*line 4 ignored/);
    expect(result.stderr.toString()).not.toContain(hex("never through config"));
    expect(result.exitCode).toBe(0);
    expect(result.stdout.toString()).toBe("changed\n");
    const config = (await (await fetch(url("backend", "/api/v1/config"))).json()) as Record<string, string>;
    expect(config).toEqual({
      STACK_DASHBOARD_URL: dashboardUrl,
      STACK_BACKEND_URL: "http://localhost:26701",
      STACK_EXAMPLE: "second",
    });
    expect(await status("backend", "/api/v1/projects/current", current)).toBe(200);
    const again = await guest((client) => client.exec({ path: manifest.guest.applyConfig }));
    expect(again.exitCode).toBe(0);
    expect(again.stdout.toString()).toBe("unchanged\n");
  });

  it("reports readiness and sets the guest clock through the agent", async () => {
    const ready = await guest((client) => client.exec({ path: manifest.guest.waitReady, args: ["30"] }));
    expect(ready.exitCode).toBe(0);
    await guest(async (client) => {
      await client.setTime(new Date("2031-02-03T04:05:06Z"));
      const date = await client.exec({ path: "/bin/date", args: ["-u", "+%Y"] });
      expect(date.stdout.toString().trim()).toBe("2031");
      await client.setTime();
    });
  });

  it("powers off cleanly on an ACPI power button press", async () => {
    const qmp = await QmpClient.connect(vm!.qmpSocket, { timeoutMs: 30_000 });
    await qmp.systemPowerdown();
    await qmp.close().catch(() => undefined);
    await vm!.exited;
    expect(readFileSync(vm!.serialLog, "utf8")).not.toMatch(/Kernel panic/);
    expect(vm!.qemu.exitCode).toBe(0);
  });
});

describe("the offline dev image across a RAM snapshot", () => {
  let dir: string;
  let vm: DevVm | undefined;
  const dashboardUrl = (n: number) => `http://dashboard-${n}.test:26700`;

  const guest = <T>(fn: (client: QgaClient) => Promise<T>) => withAgent(vm!, fn);

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "dev-image-resume-"));
  });

  afterAll(async () => {
    await vm?.kill();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it(
    "resumes in a new QEMU with a new config ISO: the data survives, the new config and secrets apply",
    async () => {
      const imageDir = image.path;
      const manifest = await readManifest(imageDir);
      const ram = (share: boolean) =>
        memoryBackendArgs({ id: "ram0", path: join(dir, "ram"), sizeMiB: manifest.memoryMiB, share });
      const firstIso = join(dir, "first.iso");
      await writeFile(firstIso, await configIso({ STACK_DASHBOARD_URL: dashboardUrl(1) }));
      const captureDir = await mkdtemp(join(dir, "capture-"));
      vm = await bootDevImage({ imageDir, dir: captureDir, isoPath: firstIso, extraArgs: ram(true) });
      await vm.waitHealthy(BOOT_TIMEOUT_MS);
      const stored = await fetch(vm.url("backend", "/api/v1/kv/before-snapshot"), {
        method: "POST",
        headers: { "x-stack-publishable-client-key": PLACEHOLDER_PCK },
        body: "kept",
      });
      expect(stored.status).toBe(200);

      const state = join(dir, "state");
      const capture = await QmpClient.connect(vm.qmpSocket, { timeoutMs: 30_000 });
      await saveVmState(capture, { method: "x-ignore-shared", path: state });
      await capture.quit();
      await vm.exited;

      // A different file behind the config drive, as after `stack-emulator start` with new settings.
      const secondIso = join(dir, "second.iso");
      await writeFile(secondIso, await configIso({ STACK_DASHBOARD_URL: dashboardUrl(2) }));
      const resumeDir = await mkdtemp(join(dir, "resume-"));
      vm = await bootDevImage({
        imageDir,
        dir: resumeDir,
        isoPath: secondIso,
        overlay: join(captureDir, "overlay.qcow2"),
        extraArgs: [...ram(false), "-incoming", "defer", "-S"],
      });
      const resume = await QmpClient.connect(vm.qmpSocket, { timeoutMs: 30_000 });
      await restoreVmState(resume, { method: "x-ignore-shared", path: state });
      await resume.cont();
      await resume.close();
      await vm.waitHealthy(BOOT_TIMEOUT_MS);

      const before = (await (await fetch(vm.url("backend", "/api/v1/config"))).json()) as Record<
        string,
        string
      >;
      expect(before.STACK_DASHBOARD_URL).toBe(dashboardUrl(1));
      const applied = await guest(async (client) => {
        await client.setTime();
        return client.exec({ path: manifest.guest.applyConfig });
      });
      expect(applied.exitCode).toBe(0);
      expect(applied.stdout.toString()).toBe("changed\n");
      const after = (await (await fetch(vm.url("backend", "/api/v1/config"))).json()) as Record<
        string,
        string
      >;
      expect(after.STACK_DASHBOARD_URL).toBe(dashboardUrl(2));

      const values = Object.fromEntries(SECRET_NAMES.map((name) => [name, hex(`${name}-after-resume`)]));
      const rotated = await guest((client) => client.exec({ path: ROTATE, stdin: secretsInput(values) }));
      expect(rotated.exitCode).toBe(0);
      const key = values.STACK_PUBLISHABLE_CLIENT_KEY!;
      expect(await vm.status("backend", "/api/v1/projects/current", PLACEHOLDER_PCK)).toBe(401);
      const kept = await fetch(vm.url("backend", "/api/v1/kv/before-snapshot"), {
        headers: { "x-stack-publishable-client-key": key },
      });
      expect(await kept.text()).toBe("kept");
    },
    2 * BOOT_TIMEOUT_MS + 120_000,
  );
});
