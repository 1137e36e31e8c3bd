import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { buildSettings, choiceFromEnv } from "../src/cli/settings.js";
import { CONFIG_DISK_BYTES, writeConfigDisk } from "../src/contract/config-disk.js";
import { contractServices, PUBLISHABLE_KEY_NAME, SECRET_NAMES } from "../src/contract/contract.js";
import type { Context } from "../src/core/context.js";
import type { EmulatorError } from "../src/core/errors.js";
import { acquireLock } from "../src/core/lock.js";
import { instancePaths, resolveHome } from "../src/core/paths.js";
import { checkPortsFree, forwardServices, parsePort, type ServiceSpec } from "../src/core/ports.js";
import { identify, isSameProcess } from "../src/core/process-identity.js";
import { newLines } from "../src/guest/app-log.js";
import { generateSecrets, loadKeys, saveKeys } from "../src/guest/secrets.js";
import { parseImageSelector, readCurrentImage, writeCurrentImage } from "../src/image/image-store.js";
import { removeUnusedSnapshots } from "../src/instance/store.js";
import { buildQemuArgs } from "../src/vm/qemu-args.js";
import { type Fingerprint, fingerprintDifferences } from "../src/vm/snapshot.js";
import { withStoreLock } from "../src/vm/snapshot-store.js";
import { freePort } from "./helpers.js";

const services: ServiceSpec[] = [
  {
    name: "dashboard",
    guestPort: 8101,
    defaultHostPort: 26700,
    portEnv: "STACK_EMULATOR_DASHBOARD_PORT",
    health: "/",
  },
  {
    name: "backend",
    guestPort: 8102,
    defaultHostPort: 26701,
    portEnv: "STACK_EMULATOR_BACKEND_PORT",
    health: "/",
  },
];

/** The services' host ports as a command with this environment would forward them (settings, then the plan). */
function resolveServicePorts(specs: ServiceSpec[], env: NodeJS.ProcessEnv) {
  const given = buildSettings({}, env).ports.given;
  return forwardServices(specs, Object.fromEntries(Object.entries(given).map(([name, r]) => [name, r.port])));
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (error) {
    return (error as EmulatorError).code;
  }
  return undefined;
}

describe("ports", () => {
  it("accepts 1-65535 and rejects everything else with the variable named", () => {
    expect(parsePort("80", "X")).toBe(80);
    expect(parsePort("65535", "X")).toBe(65535);
    for (const bad of ["0", "65536", "99999", "-1", "8o", "", "1.5", "0x50"]) {
      expect(codeOf(() => parsePort(bad, "STACK_EMULATOR_BACKEND_PORT"))).toBe("INVALID_PORT");
    }
    expect(() => parsePort("70000", "STACK_EMULATOR_BACKEND_PORT")).toThrow(/STACK_EMULATOR_BACKEND_PORT/);
  });

  it("takes ports from the environment and refuses two services on one port", () => {
    const resolved = resolveServicePorts(services, { STACK_EMULATOR_BACKEND_PORT: "31001" });
    expect(resolved.map((s) => s.hostPort)).toEqual([26700, 31001]);
    expect(codeOf(() => resolveServicePorts(services, { STACK_EMULATOR_BACKEND_PORT: "26700" }))).toBe(
      "PORT_CONFLICT",
    );
  });

  it("honours the original CLI's EMULATOR_*_PORT names, with this project's names winning", () => {
    const ports = (env: NodeJS.ProcessEnv) => resolveServicePorts(services, env).map((s) => s.hostPort);
    expect(ports({ EMULATOR_BACKEND_PORT: "31002", EMULATOR_DASHBOARD_PORT: "31003" })).toEqual([
      31003, 31002,
    ]);
    expect(ports({ EMULATOR_BACKEND_PORT: "31002", STACK_EMULATOR_BACKEND_PORT: "31004" })).toEqual([
      26700, 31004,
    ]);
    expect(() => resolveServicePorts(services, { EMULATOR_BACKEND_PORT: "99999" })).toThrow(
      /^EMULATOR_BACKEND_PORT=/,
    );
  });

  it("forwards the mock OAuth server from the host port of its own number, whatever is set", () => {
    const oauth = contractServices("82").find((s) => s.name === "mock-oauth") as ServiceSpec;
    expect(resolveServicePorts([oauth], { STACK_EMULATOR_MOCK_OAUTH_PORT: "9999" })[0]?.hostPort).toBe(8214);
  });

  it("names the service whose port is taken", async () => {
    const port = await freePort();
    const server = createServer().listen(port, "127.0.0.1");
    await new Promise((r) => server.once("listening", r));
    try {
      const resolved = resolveServicePorts(services, { STACK_EMULATOR_BACKEND_PORT: String(port) });
      await expect(checkPortsFree(resolved)).rejects.toThrow(new RegExp(`backend on 127.0.0.1:${port}`));
      // An optional service (the mock OAuth server) whose port is taken is left out, with a note.
      const optional = [{ ...(resolved[1] as ServiceSpec), hostPort: port, optional: true }];
      const checked = await checkPortsFree(optional);
      expect(checked.services).toEqual([]);
      expect(checked.notes[0]).toMatch(new RegExp(`host port ${port} \\(backend\\) is taken`));
    } finally {
      server.close();
    }
  });
});

describe("image selectors", () => {
  it("parses every form and rejects unknown ones", () => {
    expect(parseImageSelector("dev")).toEqual({ kind: "dev" });
    expect(parseImageSelector("release:emulator-main-latest")).toEqual({
      kind: "release",
      tag: "emulator-main-latest",
    });
    expect(parseImageSelector("pr:1234")).toEqual({ kind: "pr", number: 1234 });
    expect(parseImageSelector("run:99")).toEqual({ kind: "run", id: 99 });
    expect(parseImageSelector("./images/x").kind).toBe("path");
    expect(codeOf(() => parseImageSelector("latest-and-greatest"))).toBe("UNKNOWN_IMAGE");
    expect(codeOf(() => parseImageSelector("pr:abc"))).toBe("UNKNOWN_IMAGE");
  });

  it("remembers the last image with its architecture, and reads what older versions wrote", () => {
    const layout = resolveHome(mkdtempSync(join(tmpdir(), "current-")));
    expect(readCurrentImage(layout)).toBeUndefined();
    // `start --image dev --arch arm64`: a later plain `start` must not fall back to the host's architecture.
    writeCurrentImage(layout, { kind: "dev" }, "arm64");
    expect(readCurrentImage(layout)).toEqual({ selector: "dev", arch: "arm64" });
    writeCurrentImage(layout, { kind: "pr", number: 7 }, "amd64");
    expect(readCurrentImage(layout)).toEqual({ selector: "pr:7", arch: "amd64" });
    writeFileSync(join(layout.images, "current"), "release:emulator-main-latest\n");
    expect(readCurrentImage(layout)).toEqual({ selector: "release:emulator-main-latest" });
    writeFileSync(join(layout.images, "current"), "dev\narch=sparc\n");
    expect(readCurrentImage(layout)).toEqual({ selector: "dev" });
  });
});

describe("settings from the environment", () => {
  const ram = { choices: ["file", "anonymous"] as const, isNot: "a kind of guest RAM", unsetMeans: "decide" };
  it("takes one of the choices, nothing when unset, and names the choices for anything else", () => {
    expect(choiceFromEnv({ STACK_EMULATOR_INSTANCE_RAM: "file" }, "STACK_EMULATOR_INSTANCE_RAM", ram)).toBe(
      "file",
    );
    expect(choiceFromEnv({}, "STACK_EMULATOR_INSTANCE_RAM", ram)).toBeUndefined();
    let thrown: EmulatorError | undefined;
    try {
      choiceFromEnv({ STACK_EMULATOR_INSTANCE_RAM: "FILE" }, "STACK_EMULATOR_INSTANCE_RAM", ram);
    } catch (error) {
      thrown = error as EmulatorError;
    }
    expect(thrown?.code).toBe("INVALID_ARGUMENT");
    expect(thrown?.message).toBe("STACK_EMULATOR_INSTANCE_RAM=FILE is not a kind of guest RAM");
    expect(thrown?.hint).toBe("use file or anonymous, or unset it to decide");
  });
});

describe("paths", () => {
  it("keeps socket paths short however deep the home is", () => {
    const deep = join(tmpdir(), "a".repeat(60), "b".repeat(60));
    const paths = instancePaths(resolveHome(deep), "default");
    expect(Buffer.byteLength(paths.qmpSocket)).toBeLessThan(104);
    expect(paths.qmpSocket.startsWith(deep)).toBe(false);
    const shallow = instancePaths(resolveHome("/tmp/h"), "default");
    expect(shallow.qmpSocket).toBe("/tmp/h/instances/default/sock/qmp.sock");
  });

  it("rejects instance names that could escape the home", () => {
    expect(codeOf(() => instancePaths(resolveHome("/tmp/h"), "../etc"))).toBe("INVALID_NAME");
  });
});

describe("process identity and the lock", () => {
  it("tells a live process from a dead one and from a reused pid", async () => {
    const child = spawn("sleep", ["30"]);
    await new Promise((r) => child.once("spawn", r));
    const identity = identify(child.pid as number);
    expect(identity && isSameProcess(identity)).toBe(true);
    expect(isSameProcess({ pid: child.pid as number, startTime: "1" })).toBe(false);
    child.kill("SIGKILL");
    await new Promise((r) => child.once("close", r));
    expect(isSameProcess(identity)).toBe(false);
  });

  it("refuses a second holder and takes over a lock whose owner died", async () => {
    const dir = mkdtempSync(join(tmpdir(), "lock-"));
    const path = join(dir, "lock");
    const lock = acquireLock(path, "test");
    expect(codeOf(() => acquireLock(path, "test"))).toBe("BUSY");
    lock.release();
    const child = spawn("sleep", ["30"]);
    await new Promise((r) => child.once("spawn", r));
    writeFileSync(path, JSON.stringify({ ...identify(child.pid as number), purpose: "start" }));
    expect(codeOf(() => acquireLock(path, "test"))).toBe("BUSY");
    child.kill("SIGKILL");
    await new Promise((r) => child.once("close", r));
    const taken = acquireLock(path, "test");
    expect(JSON.parse(readFileSync(path, "utf8")).pid).toBe(process.pid);
    taken.release();
  });
});

describe("the snapshot store", () => {
  it("is not cleaned up under a capture between its commit and its publication", async () => {
    const layout = resolveHome(mkdtempSync(join(tmpdir(), "store-")));
    const root = join(layout.snapshots, "dev");
    const generation = (name: string) => {
      mkdirSync(join(root, name), { recursive: true });
      writeFileSync(join(root, name, "snapshot.json"), "{}");
      return join(root, name);
    };
    const older = generation("g-older");
    writeFileSync(join(root, "current"), "g-older\n");
    // A capture holds the store from its commit to its publication: its generation is there, not yet current.
    let publish = () => {};
    const capture = withStoreLock(layout, "capture", () => new Promise<void>((r) => (publish = r)));
    const newer = generation("g-newer");
    let cleaned = false;
    const cleanUp = removeUnusedSnapshots({ layout } as Context).then(() => {
      cleaned = true;
    });
    await new Promise((r) => setTimeout(r, 300));
    expect(cleaned).toBe(false);
    expect(existsSync(newer)).toBe(true);
    writeFileSync(join(root, "current"), "g-newer\n");
    publish();
    await capture;
    await cleanUp;
    expect(existsSync(newer)).toBe(true);
    expect(existsSync(older)).toBe(false);
  });
});

describe("secrets", () => {
  it("are 64 hex chars, different every time, and saved owner-only", () => {
    const a = generateSecrets(["A", "B"]);
    const b = generateSecrets(["A", "B"]);
    expect(a.A).toMatch(/^[0-9a-f]{64}$/);
    expect(a.A).not.toBe(b.A);
    expect(a.A).not.toBe(a.B);
    const paths = instancePaths(resolveHome(mkdtempSync(join(tmpdir(), "keys-"))), "i");
    mkdirSync(paths.dir, { recursive: true });
    const keys = generateSecrets(SECRET_NAMES);
    saveKeys(paths, keys);
    expect(statSync(paths.keys).mode & 0o777).toBe(0o600);
    expect(loadKeys(paths.keys)).toEqual(keys);
    // internal-pck: the publishable key alone, where the original's CLI reads it.
    expect(statSync(paths.internalPck).mode & 0o777).toBe(0o600);
    expect(readFileSync(paths.internalPck, "utf8")).toBe(keys[PUBLISHABLE_KEY_NAME]);
  });

  it("that do not read as keys are set aside with a warning that never shows them", () => {
    const paths = instancePaths(resolveHome(mkdtempSync(join(tmpdir(), "keys-"))), "i");
    mkdirSync(paths.dir, { recursive: true });
    const keys = generateSecrets(SECRET_NAMES);
    const [first, second] = SECRET_NAMES;
    const edited = { ...keys, [first]: `${keys[first]}0`, [second]: "a-key-typed-by-hand" };
    writeFileSync(
      paths.keys,
      Object.entries(edited)
        .map(([name, value]) => `${name}=${value}\n`)
        .join(""),
    );
    const warnings: string[] = [];
    expect(loadKeys(paths.keys, (message) => warnings.push(message))).toBeUndefined();
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain(`${paths.keys} is unreadable (${first}: expected`);
    for (const value of Object.values(edited)) expect(warnings[0]).not.toContain(value);
    expect(readFileSync(`${paths.keys}.unreadable`, "utf8")).toContain("a-key-typed-by-hand");
  });
});

describe("following the app's log", () => {
  it("prints only the lines after what was shown, also when the window moved on", () => {
    expect(newLines(["a", "b", "c"], ["b", "c", "d", "e"])).toEqual(["d", "e"]);
    expect(newLines(["a", "b"], ["a", "b"])).toEqual([]);
    expect(newLines(["a", "b"], ["x", "y"])).toEqual(["x", "y"]);
    expect(newLines([], ["x"])).toEqual(["x"]);
  });
});

describe("fingerprints", () => {
  it("lists what changed", () => {
    const base: Fingerprint = {
      qemuBinary: "/usr/bin/qemu-system-x86_64",
      qemuVersion: "7.2.22",
      accel: "tcg",
      cpu: "max",
      machine: "q35",
      memoryMiB: 256,
      cpus: 2,
      deviceLayout: 1,
      imageDigest: "sha256:aa",
      method: "x-ignore-shared",
      portPrefix: "81",
    };
    expect(fingerprintDifferences(base, { ...base })).toEqual([]);
    expect(fingerprintDifferences(base, { ...base, memoryMiB: 512, accel: "kvm", portPrefix: "82" })).toEqual(
      ["accel tcg -> kvm", "memoryMiB 256 -> 512", "portPrefix 81 -> 82"],
    );
  });
});

describe("config disk", () => {
  it("is an ISO that an independent reader sees with the volume id, runtime.env and base.env", async () => {
    const dir = mkdtempSync(join(tmpdir(), "cfg-"));
    const iso = join(dir, "config.iso");
    await writeConfigDisk(iso, { "runtime.env": "STACK_EMULATOR_PORT_PREFIX=81\n", "base.env": "A=1\n" });
    expect(execFileSync("isoinfo", ["-d", "-i", iso], { encoding: "utf8" })).toMatch(/Volume id: STACKCFG/);
    expect(statSync(iso).size).toBe(CONFIG_DISK_BYTES);

    const out = join(dir, "x");
    mkdirSync(out);
    execFileSync("bsdtar", ["-xf", iso, "-C", out]);
    expect(readFileSync(join(out, "runtime.env"), "utf8")).toBe("STACK_EMULATOR_PORT_PREFIX=81\n");
    expect(readFileSync(join(out, "base.env"), "utf8")).toBe("A=1\n");
  });
});

describe("QEMU command line", () => {
  const paths = instancePaths(resolveHome("/tmp/h,1"), "default");
  const image = {
    dir: "/img",
    diskPath: "/img/disk.qcow2",
    kernelPath: "/img/vmlinuz",
    initrdPath: "/img/initrd.img",
    manifest: {
      schema: 2 as const,
      name: "x",
      arch: "amd64" as const,
      digest: "sha256:00",
      boot: { kernel: "vmlinuz", initrd: "initrd.img", append: "console=ttyS0" },
      disk: "disk.qcow2",
      memoryMiB: 256,
      cpus: 2,
    },
  };
  const base = {
    image,
    paths,
    disk: paths.disk,
    services: [{ name: "backend", guestPort: 8102, defaultHostPort: 1, hostPort: 31001 }],
  };

  it("pins the device layout, forwards ports on loopback only and escapes commas in paths", () => {
    const args = buildQemuArgs({
      ...base,
      machine: { qemu: "qemu", arch: "amd64", accel: "tcg" },
      ram: { kind: "file", path: "/snap/ram", share: false },
      incoming: true,
    });
    const line = args.join(" ");
    expect(line).toContain("-machine q35,memory-backend=ram0");
    expect(line).toContain("memory-backend-file,id=ram0,mem-path=/snap/ram,size=256M,share=off");
    expect(line).toContain("hostfwd=tcp:127.0.0.1:31001-:8102");
    expect(line).toContain("file=/tmp/h,,1/instances/default/disk.qcow2");
    expect(line).toContain("vmgenid");
    expect(line).toMatch(/-S -incoming defer$/);
    expect(args).toContain("-kernel");
    // The config-file share: a root port to hot-plug into and the -fsdev it names; no 9p device unless recorded.
    expect(line).toContain("pcie-root-port,id=hostfs-port,chassis=1,bus=pcie.0,addr=0x8");
    expect(line).toContain(
      "-fsdev local,id=hostfs,path=/tmp/h,,1/instances/default/share,security_model=none",
    );
    expect(line).not.toContain("virtio-9p-pci");
  });

  it("puts the share's 9p device on the command line when a saved state was recorded with it", () => {
    const line = buildQemuArgs({
      ...base,
      machine: { qemu: "qemu", arch: "amd64", accel: "tcg" },
      ram: { kind: "anonymous" },
      incoming: true,
      shareDevice: true,
    }).join(" ");
    expect(line).toContain(
      "-device virtio-9p-pci,id=hostfs-dev,fsdev=hostfs,mount_tag=hostfs,bus=hostfs-port",
    );
  });

  it("gives split UEFI flash a per-instance variable store", () => {
    const args = buildQemuArgs({
      ...base,
      machine: {
        qemu: "qemu",
        arch: "arm64",
        accel: "tcg",
        firmware: { code: "/fw/code.fd", vars: "/fw/vars.fd", format: "raw", device: "flash", features: [] },
      },
      ram: { kind: "anonymous" },
      incoming: false,
    }).join(" ");
    expect(args).toContain("if=pflash,format=raw,readonly=on,file=/fw/code.fd");
    expect(args).toContain(`if=pflash,format=raw,file=${paths.firmwareVars.replaceAll(",", ",,")}`);
    expect(args).not.toContain("-incoming");
    expect(args).toContain("-machine virt,gic-version=3,memory-backend=ram0 ");
  });

  it("boots an arm64 kernel on virt with a pinned GIC, no firmware and no vmgenid", () => {
    const args = buildQemuArgs({
      ...base,
      image: {
        ...image,
        kernelPath: "/img/Image",
        manifest: { ...image.manifest, arch: "arm64", boot: { kernel: "Image", append: "console=ttyAMA0" } },
      },
      machine: { qemu: "qemu-system-aarch64", arch: "arm64", accel: "tcg" },
      ram: { kind: "file", path: "/snap/ram", share: true },
      incoming: false,
    });
    const line = args.join(" ");
    expect(line).toContain("-machine virt,gic-version=3,memory-backend=ram0 -accel tcg -cpu max");
    expect(line).toContain("-kernel /img/Image -initrd /img/initrd.img -append console=ttyAMA0");
    expect(line).not.toContain("vmgenid");
    expect(line).not.toContain("pflash");
    expect(line).toContain("virtio-rng-pci,id=rng0,bus=pcie.0,addr=0x6");
  });
});

describe("the device layout", () => {
  /** PCI address -> device driver (and MAC for the NIC), from a QEMU argument list. */
  function pciLayout(args: string[]): Record<string, string> {
    const layout: Record<string, string> = {};
    args.forEach((arg, i) => {
      if (args[i - 1] !== "-device") return;
      const addr = /(?:^|,)addr=(0x[0-9a-f]+)/.exec(arg)?.[1];
      const mac = /(?:^|,)mac=([0-9a-f:]+)/.exec(arg)?.[1];
      if (addr) layout[addr] = `${arg.split(",")[0]}${mac ? ` ${mac}` : ""}`;
    });
    return layout;
  }

  it.each(["amd64", "arm64"] as const)(
    "is the one guest/build-image provisions the real %s image with",
    (arch) => {
      const out = execFileSync(
        join(import.meta.dirname, "..", "..", "..", "guest", "build-image"),
        ["--dry-run", "--arch", arch],
        {
          encoding: "utf8",
        },
      );
      const build = pciLayout(out.slice(0, out.indexOf("\n\n")).split("\n"));
      // The cloud-init seed and the build's settings exist only while the image is built.
      delete build["0x7"];
      delete build["0x9"];
      const paths = instancePaths(resolveHome("/tmp/h"), "default");
      const ours = buildQemuArgs({
        image: {
          dir: "/i",
          diskPath: "/i/d",
          manifest: { memoryMiB: 4096, cpus: 4, boot: { firmware: "bios" } },
        } as never,
        paths,
        disk: paths.disk,
        services: [],
        machine: { qemu: "qemu", arch, accel: "tcg" },
        ram: { kind: "anonymous" },
        incoming: false,
      });
      const runtime = pciLayout(ours);
      expect(runtime["0x8"]).toBe("pcie-root-port");
      expect(runtime).toEqual(build);
      expect(Object.keys(build).length).toBeGreaterThanOrEqual(5);
    },
  );
});
