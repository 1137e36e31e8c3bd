import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { QgaClient } from "@stack/qga";
import { memoryBackendArgs, QmpClient, restoreVmState, saveVmState } from "@stack/qmp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  internalClientHeaders,
  REAPPLY_CONFIG_SCRIPT,
  SECRET_NAMES,
} from "../../packages/emulator-cli/src/contract/contract.js";
import {
  type BuildResult,
  bootDevImage,
  buildDevImage,
  configIso,
  type DevVm,
  type Manifest,
  readManifest,
  type Service,
} from "./dev-vm.js";

/**
 * Builds the dev image into a temporary directory, boots it with QEMU directly (TCG, as the CLI does on this kind of
 * host) with a config disk written by @stack/iso9660, and checks the guest side of the original's contract
 * (docs/guest-contract.md) from the outside: HTTP on the forwarded ports, rotation, config and the host share
 * through the real guest agent and QMP.
 */
const BUILD_TIMEOUT_MS = 600_000;
const BOOT_TIMEOUT_MS = 240_000;
const PLACEHOLDER_PCK = `${"0".repeat(32)}${"f".repeat(32)}`;
const ROTATE = "/usr/local/bin/trigger-fast-rotate";
const [PCK, SSK] = SECRET_NAMES;

/** Runs a shell script in the guest through the agent. */
function shell(client: QgaClient, script: string) {
  return client.exec({ path: "/bin/sh", args: ["-c", script] });
}

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
  let shareDir: string;
  const hostPorts = { dashboard: 31700, backend: 31701, minio: 31702, inbucket: 31703 };
  // The publishable client key in force; the rotation test moves it on.
  let current = PLACEHOLDER_PCK;

  const url = (service: Service, path: string) => vm!.url(service, path);
  const status = (service: Service, path: string, key?: string) => vm!.status(service, path, key);
  const appConfig = async () =>
    (await (await fetch(url("backend", "/api/v1/config"))).json()) as Record<string, string>;

  const guest = <T>(fn: (client: QgaClient) => Promise<T>) => withAgent(vm!, fn);

  async function rotate(input: string) {
    return guest((client) => client.exec({ path: ROTATE, stdin: input }));
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "dev-image-test-"));
    shareDir = join(dir, "share");
    await mkdir(shareDir);
    manifest = await readManifest(image.path);
    isoPath = join(dir, "config.iso");
    await writeFile(isoPath, await configIso("81", hostPorts));
    vm = await bootDevImage({ imageDir: image.path, dir, isoPath, shareDir });
    await vm.waitHealthy(BOOT_TIMEOUT_MS);
  }, BOOT_TIMEOUT_MS);

  afterAll(async () => {
    await vm?.kill();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("writes a manifest of the hardware and boot only, with a digest over the content", async () => {
    expect(manifest).toMatchObject({
      schema: 2,
      name: "stack-emulator-dev",
      arch: "amd64",
      boot: { initrd: "initrd.img" },
      disk: "disk.qcow2",
      memoryMiB: 256,
      cpus: 2,
    });
    expect(Object.keys(manifest)).not.toContain("services");
    // vmlinuz only where the host lacks xz to unpack the kernel's ELF image.
    expect(["vmlinux", "vmlinuz"]).toContain(manifest.boot.kernel);
    expect(manifest.boot.append).toContain("console=ttyS0");
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

  it("serves every service of the contract on its guest port", async () => {
    expect(await status("backend", "/health?db=1")).toBe(200);
    expect(await status("dashboard", "/handler/sign-in")).toBe(200);
    expect(await status("minio", "/minio/health/live")).toBe(200);
    expect(await status("inbucket", "/")).toBe(200);
    expect(await status("mock-oauth", "/")).toBe(200);
  });

  it("renders the app's env from runtime.env and base.env on the config disk, as render-stack-env does", async () => {
    const config = await appConfig();
    expect(config).toMatchObject({
      NEXT_PUBLIC_STACK_PORT_PREFIX: "81",
      NEXT_PUBLIC_STACK_API_URL: "http://localhost:31701",
      NEXT_PUBLIC_STACK_DASHBOARD_URL: "http://localhost:31700",
      STACK_S3_PUBLIC_ENDPOINT: "http://localhost:31702/stack-storage",
      STACK_OAUTH_MOCK_URL: "http://localhost:8114",
      // From base.env.
      NEXT_PUBLIC_STACK_IS_LOCAL_EMULATOR: "true",
      BACKEND_PORT: "8102",
    });
    // Credentials are not shown, nor the database URL that carries base.env's password.
    expect(Object.keys(config).some((k) => k.includes("SECRET") || k.endsWith("_KEY"))).toBe(false);
    expect(config.STACK_DATABASE_CONNECTION_STRING).toBeUndefined();
    const page = await (await fetch(url("dashboard", "/handler/sign-in"))).text();
    expect(page).toContain("http://localhost:31700");
    const mounts = await guest((client) => client.exec({ path: "/bin/cat", args: ["/proc/mounts"] }));
    expect(mounts.stdout.toString()).toMatch(/ \/mnt\/stack-runtime iso9660 ro/);
  });

  it("accepts only the current publishable client key of the internal project, the placeholder at first boot", async () => {
    expect(await status("backend", "/api/v1/projects/current", PLACEHOLDER_PCK)).toBe(200);
    expect(await status("backend", "/api/v1/projects/current", hex("wrong"))).toBe(401);
    expect(await status("backend", "/api/v1/projects/current")).toBe(400);
    // Without an access type a key means nothing, as in the real backend.
    const untyped = await fetch(url("backend", "/api/v1/projects/current"), {
      headers: { "x-stack-project-id": "internal", "x-stack-publishable-client-key": PLACEHOLDER_PCK },
    });
    expect(untyped.status).toBe(401);
  });

  it("stores values on the data disk, behind the key", async () => {
    const key = current;
    const put = await fetch(url("backend", "/api/v1/kv/greeting"), {
      method: "POST",
      headers: internalClientHeaders(key),
      body: "hello from the host\n",
    });
    expect(put.status).toBe(200);
    const got = await fetch(url("backend", "/api/v1/kv/greeting"), { headers: internalClientHeaders(key) });
    expect(got.status).toBe(200);
    expect(await got.text()).toBe("hello from the host\n");
    expect(await status("backend", "/api/v1/kv/greeting", hex("wrong"))).toBe(401);
    expect(await status("backend", "/api/v1/kv/absent", key)).toBe(404);
    const onDisk = await guest((client) => client.exec({ path: "/bin/cat", args: ["/data/kv/greeting"] }));
    expect(onDisk.stdout.toString()).toBe("hello from the host\n");
  });

  it("rotates the secrets given in the original's names: the new key works, the old one stops working", async () => {
    const values = Object.fromEntries(SECRET_NAMES.map((name) => [name, hex(`${name}-rotated`)]));
    const result = await rotate(secretsInput(values));
    expect(result.stderr.toString()).toBe("");
    expect(result.exitCode).toBe(0);
    const newKey = values[PCK]!;
    expect(await status("backend", "/api/v1/projects/current", newKey)).toBe(200);
    expect(await status("backend", "/api/v1/projects/current", PLACEHOLDER_PCK)).toBe(401);
    current = newKey;
    const mode = await guest((client) =>
      client.exec({ path: "/bin/stat", args: ["-c", "%a", "/run/stack-auth/rotated-secrets.env"] }),
    );
    expect(mode.stdout.toString().trim()).toBe("600");
  });

  it("rejects bad rotation input with a message, changing nothing", async () => {
    const good = Object.fromEntries(SECRET_NAMES.map((name) => [name, hex(`${name}-never-applied`)]));
    const badValue = "g".repeat(64);
    const { CRON_SECRET: _, ...withoutCron } = good;
    const cases: [string, string][] = [
      ["not hex", secretsInput({ ...good, [SSK]: badValue })],
      ["too long", secretsInput({ ...good, CRON_SECRET: `${hex("long")}0` })],
      ["too short", secretsInput({ ...good, [PCK]: "abcd" })],
      [
        "this project's old names",
        secretsInput({ ...withoutCron, STACK_PUBLISHABLE_CLIENT_KEY: hex("old") }),
      ],
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
      expect(message, label).not.toContain(good[SSK]);
    }
    expect(await status("backend", "/api/v1/projects/current", current)).toBe(200);
    expect(await status("backend", "/api/v1/projects/current", good[PCK])).toBe(401);
  });

  it("takes a config file's project through the hot-plugged share, reads it at /host and writes edits back", async () => {
    const project = join(shareDir, "work", "app");
    await mkdir(project, { recursive: true });
    await writeFile(join(shareDir, "work", "package.json"), '{"devDependencies":{"@stackframe/stack":"2"}}');
    const file = join(project, "stack.config.ts");
    await writeFile(file, 'export const config = {"teams": {"allowClientTeamCreation": false}};\n');
    const qmp = await QmpClient.connect(vm!.qmpSocket, { timeoutMs: 30_000 });
    try {
      await qmp.deviceAdd("virtio-9p-pci", {
        id: "hostfs-dev",
        fsdev: "hostfs",
        mount_tag: "hostfs",
        bus: "hostfs-port",
      });
    } finally {
      await qmp.close();
    }
    const mounted = await guest((client) =>
      shell(
        client,
        "until grep -qsx hostfs /sys/bus/virtio/drivers/9pnet_virtio/*/mount_tag; do sleep 0.05; done; /usr/local/bin/mount-host-fs --post-resume && ls /host/work/app",
      ),
    );
    expect(mounted.stderr.toString()).toBe("");
    expect(mounted.stdout.toString()).toBe("stack.config.ts\n");

    const request = (path: string) =>
      fetch(url("backend", "/api/v1/internal/local-emulator/project"), {
        method: "POST",
        headers: { ...internalClientHeaders(current), "content-type": "application/json" },
        body: JSON.stringify({ absolute_file_path: path }),
      });
    const created = await request("/work/app/stack.config.ts");
    expect(created.status).toBe(200);
    const body = (await created.json()) as Record<string, string>;
    expect(Object.keys(body).sort()).toEqual([
      "branch_config_override_string",
      "project_id",
      "publishable_client_key",
      "secret_server_key",
      "super_secret_admin_key",
    ]);
    expect(JSON.parse(body.branch_config_override_string!)).toEqual({
      teams: { allowClientTeamCreation: false },
    });
    const again = (await (await request("/work/app/stack.config.ts")).json()) as Record<string, string>;
    expect(again.project_id).toBe(body.project_id);
    expect((await request("/work/app/missing.ts")).status).toBe(400);
    expect((await request("work/app/stack.config.ts")).status).toBe(400);
    expect((await request("/work/../etc/passwd")).status).toBe(400);

    const admin = {
      "x-stack-project-id": body.project_id!,
      "x-stack-access-type": "admin",
      "x-stack-super-secret-admin-key": body.super_secret_admin_key!,
    };
    // An edit on the host (saved by rename, as editors do) is what the backend reads next.
    await writeFile(`${file}.new`, 'export const config = {"teams": {"allowClientTeamCreation": true}};\n');
    await rename(`${file}.new`, file);
    const read = await fetch(url("backend", "/api/v1/internal/config/override/branch"), { headers: admin });
    expect(JSON.parse(((await read.json()) as { config_string: string }).config_string)).toEqual({
      teams: { allowClientTeamCreation: true },
    });

    // A dashboard edit is written to the file, rendered as the backend renders configs.
    const patched = await fetch(url("backend", "/api/v1/internal/config/override/branch"), {
      method: "PATCH",
      headers: { ...admin, "content-type": "application/json" },
      body: JSON.stringify({ config_override_string: JSON.stringify({ "auth.allowLocalhost": true }) }),
    });
    expect(patched.status).toBe(200);
    expect(await readFile(file, "utf8")).toBe(
      [
        'import type { StackConfig } from "@stackframe/stack";',
        "",
        "export const config: StackConfig = {",
        '  "teams": {',
        '    "allowClientTeamCreation": true',
        "  },",
        '  "auth": {',
        '    "allowLocalhost": true',
        "  }",
        "};",
        "",
      ].join("\n"),
    );
    // The internal project's publishable key provisions projects; it cannot read one's config.
    const asClient = await fetch(url("backend", "/api/v1/internal/config/override/branch"), {
      headers: {
        ...internalClientHeaders(body.publishable_client_key!),
        "x-stack-project-id": body.project_id!,
      },
    });
    expect(asClient.status).toBe(401);

    const unmounted = await guest((client) =>
      shell(client, "umount /host && ! grep -q ' /host 9p ' /proc/mounts"),
    );
    expect(unmounted.exitCode).toBe(0);
  });

  it("restarts the app with a replaced config disk through stack.service, back on the placeholder keys", async () => {
    // The same inode rewritten in place stands in for the disk swapped behind the drive during a resume: QEMU
    // reads the new bytes, the guest still has the old ones cached and mounted.
    const replacement = await configIso("81", { ...hostPorts, dashboard: 31710 });
    expect(replacement.length).toBe((await stat(isoPath)).size);
    await writeFile(isoPath, replacement);
    expect((await appConfig()).NEXT_PUBLIC_STACK_DASHBOARD_URL).toBe("http://localhost:31700");
    const result = await guest((client) => shell(client, REAPPLY_CONFIG_SCRIPT));
    expect(result.exitCode, result.stderr.toString()).toBe(0);
    await vm!.waitHealthy(30_000);
    expect((await appConfig()).NEXT_PUBLIC_STACK_DASHBOARD_URL).toBe("http://localhost:31710");
    // A restarted app starts from the image's placeholders, as a new container does: the host rotates afterwards.
    expect(await status("backend", "/api/v1/projects/current", PLACEHOLDER_PCK)).toBe(200);
    expect(await status("backend", "/api/v1/projects/current", current)).toBe(401);
    current = PLACEHOLDER_PCK;
    const log = await guest((client) =>
      client.exec({ path: "/usr/bin/journalctl", args: ["-u", "stack.service", "-o", "cat", "-n", "50"] }),
    );
    expect(log.stdout.toString()).toContain("stack.service: starting the app");
  });

  it("reports readiness and sets the guest clock through the agent", async () => {
    const ready = await guest((client) =>
      client.exec({ path: "/usr/local/bin/wait-for-stack-ready", args: ["30"] }),
    );
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

  const guest = <T>(fn: (client: QgaClient) => Promise<T>) => withAgent(vm!, fn);

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "dev-image-resume-"));
  });

  afterAll(async () => {
    await vm?.kill();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it(
    "resumes in a new QEMU with a new config disk: the data survives, the new config and secrets apply",
    async () => {
      const imageDir = image.path;
      const manifest = await readManifest(imageDir);
      const ram = (share: boolean) =>
        memoryBackendArgs({ id: "ram0", path: join(dir, "ram"), sizeMiB: manifest.memoryMiB, share });
      const firstIso = join(dir, "first.iso");
      await writeFile(firstIso, await configIso("81", { dashboard: 31800 }));
      const captureDir = await mkdtemp(join(dir, "capture-"));
      vm = await bootDevImage({ imageDir, dir: captureDir, isoPath: firstIso, extraArgs: ram(true) });
      await vm.waitHealthy(BOOT_TIMEOUT_MS);
      const stored = await fetch(vm.url("backend", "/api/v1/kv/before-snapshot"), {
        method: "POST",
        headers: internalClientHeaders(PLACEHOLDER_PCK),
        body: "kept",
      });
      expect(stored.status).toBe(200);

      const state = join(dir, "state");
      const capture = await QmpClient.connect(vm.qmpSocket, { timeoutMs: 30_000 });
      await saveVmState(capture, { method: "x-ignore-shared", path: state });
      await capture.quit();
      await vm.exited;

      // A different file behind the config drive, as after `stack-emulator start` on other host ports.
      const secondIso = join(dir, "second.iso");
      await writeFile(secondIso, await configIso("81", { dashboard: 31900 }));
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

      const appConfig = async () =>
        (await (await fetch(vm!.url("backend", "/api/v1/config"))).json()) as Record<string, string>;
      expect((await appConfig()).NEXT_PUBLIC_STACK_DASHBOARD_URL).toBe("http://localhost:31800");
      const applied = await guest(async (client) => {
        await client.setTime();
        return shell(client, REAPPLY_CONFIG_SCRIPT);
      });
      expect(applied.exitCode).toBe(0);
      await vm.waitHealthy(30_000);
      expect((await appConfig()).NEXT_PUBLIC_STACK_DASHBOARD_URL).toBe("http://localhost:31900");

      const values = Object.fromEntries(SECRET_NAMES.map((name) => [name, hex(`${name}-after-resume`)]));
      const rotated = await guest((client) => client.exec({ path: ROTATE, stdin: secretsInput(values) }));
      expect(rotated.exitCode).toBe(0);
      const key = values[PCK]!;
      expect(await vm.status("backend", "/api/v1/projects/current", PLACEHOLDER_PCK)).toBe(401);
      const kept = await fetch(vm.url("backend", "/api/v1/kv/before-snapshot"), {
        headers: internalClientHeaders(key),
      });
      expect(await kept.text()).toBe("kept");
    },
    2 * BOOT_TIMEOUT_MS + 120_000,
  );
});
