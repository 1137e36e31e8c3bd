// The files that make the real image, checked offline: cloud-init's user-data (in sync with the scripts it
// embeds, accepted by cloud-init's own schema check), every shell script (shellcheck, bash -n), guest/build-image
// (its pinned device layout started in a real, paused QEMU; its manifest), and the Dockerfile's consistency with
// the files it ships. No image is built here: that needs the internet and a long boot.

import { execFileSync } from "node:child_process";
import { access, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  contractServices,
  DEFAULT_PORT_PREFIX,
  runtimeEnv,
} from "../../packages/emulator-cli/src/contract/contract.js";
import { releaseManifest } from "../../packages/emulator-cli/src/image/pull.js";
import { cloudInitDir, dockerDir, mustRun, repoRoot, run } from "./harness.js";

const hasX86Qemu = (() => {
  try {
    execFileSync("qemu-system-x86_64", ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
})();

// user-data, meta-data and the scripts.
describe("cloud-init and shell scripts", () => {
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "stack-cloud-init-"));
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  interface WriteFile {
    path: string;
    content: string;
    permissions?: string;
  }

  /** Parsed by PyYAML, the parser cloud-init itself uses. */
  async function parseYaml<T>(file: string): Promise<T> {
    const json = await mustRun("python3", [
      "-c",
      "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
      file,
    ]);
    return JSON.parse(json) as T;
  }

  interface CloudConfig {
    write_files: WriteFile[];
    packages: string[];
    runcmd: unknown[];
    power_state: { mode: string };
  }

  describe("guest/cloud-init/user-data", () => {
    const userData = join(cloudInitDir, "user-data");
    let config: CloudConfig;

    beforeAll(async () => {
      config = await parseYaml<CloudConfig>(userData);
    });

    it("is what render-user-data makes of the template and the scripts", async () => {
      const fresh = join(dir, "user-data");
      await mustRun(join(cloudInitDir, "render-user-data"), [fresh]);
      expect(await readFile(userData, "utf8")).toBe(await readFile(fresh, "utf8"));
      expect((await run(join(cloudInitDir, "render-user-data"), ["--check"])).code).toBe(0);
    });

    it("passes cloud-init's schema validation", async () => {
      const r = await run("cloud-init", ["schema", "--config-file", userData]);
      expect(r.stderr).toBe("");
      expect(r.stdout).toMatch(/^Valid cloud-config/);
      expect(r.code).toBe(0);
    });

    it("ships byte-for-byte the scripts the tests run, at the contract's paths, executable", async () => {
      const shipped = new Map(config.write_files.map((f) => [f.path, f]));
      const script = (name: string): [string, string, string] => [
        `/usr/local/bin/${name}`,
        join(cloudInitDir, "scripts", name),
        "0755",
      ];
      const sources: [string, string, string][] = [
        ["/usr/local/lib/stack-emulator/secret-input.sh", join(dockerDir, "lib", "secret-input.sh"), "0644"],
        script("render-stack-env"),
        script("trigger-fast-rotate"),
        script("mount-host-fs"),
        script("run-stack-container"),
        script("wait-for-stack-ready"),
        script("provision-build"),
        ["/etc/stack-emulator/images.env", join(cloudInitDir, "images.env"), "0644"],
        ["/etc/systemd/system/stack.service", join(cloudInitDir, "stack.service"), "0644"],
      ];
      for (const [path, source, mode] of sources) {
        expect(shipped.get(path)?.content, path).toBe(await readFile(source, "utf8"));
        expect(shipped.get(path)?.permissions, path).toBe(mode);
      }
    });

    it("runs stack.service as the original's: run-stack-container, restarted every 5 s", async () => {
      const unit = await readFile(join(cloudInitDir, "stack.service"), "utf8");
      for (const line of [
        "Restart=always",
        "RestartSec=5",
        "ExecStart=/usr/local/bin/run-stack-container",
        "ExecStop=/usr/local/bin/run-stack-container --stop",
        "WantedBy=multi-user.target",
      ]) {
        expect(unit).toContain(`\n${line}\n`);
      }
    });

    it("provisions with provision-build: the agent up, the app healthy once, then the marker, then power-off", async () => {
      expect(config.packages).toEqual(expect.arrayContaining(["docker.io", "qemu-guest-agent", "curl"]));
      expect(config.runcmd).toEqual([["bash", "/usr/local/bin/provision-build"]]);
      expect(config.power_state.mode).toBe("poweroff");
      const steps = (await readFile(join(cloudInitDir, "scripts", "provision-build"), "utf8")).split("\n");
      const at = (line: string) => {
        const i = steps.indexOf(line);
        expect(i, line).toBeGreaterThan(0);
        return i;
      };
      expect(steps[0]).toBe("#!/usr/bin/env bash");
      expect(steps).toContain("set -euo pipefail");
      // qemu-ga runs from this boot on, so its port is open whenever the host captures a snapshot.
      expect(at("systemctl start qemu-guest-agent")).toBeLessThan(at("systemctl start stack.service"));
      expect(at("systemctl enable stack.service")).toBeLessThan(at("systemctl start stack.service"));
      expect(at("systemctl start stack.service")).toBeLessThan(
        at("STACK_READY_TIMEOUT=1800 wait-for-stack-ready"),
      );
      expect(at("STACK_READY_TIMEOUT=1800 wait-for-stack-ready")).toBeLessThan(
        at('  if [ -c "$console" ]; then echo STACK-EMULATOR-BUILD-OK >"$console" || true; fi'),
      );
      expect(at("systemctl is-active --quiet qemu-guest-agent")).toBeLessThan(
        at("touch /etc/cloud/cloud-init.disabled"),
      );
    });

    it("builds with the runtime.env the CLI writes for the default prefix and host ports", async () => {
      const defaults = contractServices(DEFAULT_PORT_PREFIX).map((s) => ({
        ...s,
        hostPort: s.defaultHostPort,
      }));
      expect(await readFile(join(cloudInitDir, "build-runtime.env"), "utf8")).toBe(
        runtimeEnv(DEFAULT_PORT_PREFIX, defaults),
      );
    });

    it("has meta-data with an instance id", async () => {
      const meta = await parseYaml<Record<string, string>>(join(cloudInitDir, "meta-data"));
      expect(meta["instance-id"]).toMatch(/^stack-emulator/);
    });
  });

  describe("shell scripts", () => {
    const scripts = [
      "docker/rotate-secrets",
      "docker/entrypoint.sh",
      "docker/prepare-app",
      "docker/lib/secret-input.sh",
      "guest/cloud-init/render-user-data",
      "guest/cloud-init/scripts/render-stack-env",
      "guest/cloud-init/scripts/trigger-fast-rotate",
      "guest/cloud-init/scripts/mount-host-fs",
      "guest/cloud-init/scripts/run-stack-container",
      "guest/cloud-init/scripts/wait-for-stack-ready",
      "guest/cloud-init/scripts/provision-build",
      "guest/build-image",
    ];

    it("are shellcheck-clean", async () => {
      const r = await run("shellcheck", ["-x", ...scripts], { cwd: repoRoot });
      expect(r.stdout).toBe("");
      expect(r.code).toBe(0);
    });

    it("parse with bash -n, including build-image which CI never runs", async () => {
      for (const s of scripts) {
        const r = await run("bash", ["-n", s], { cwd: repoRoot });
        expect(r.stderr, s).toBe("");
      }
    });

    it("build-image explains itself without touching the network", async () => {
      const r = await run(join(repoRoot, "guest", "build-image"), ["--help"]);
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/usage: guest\/build-image/);
    });
  });
});

// The pinned layout and the manifest, from `guest/build-image --dry-run`.
describe("build-image offline", () => {
  let dir: string;
  let qemuArgs: string[];
  let manifest: Record<string, unknown>;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "stack-build-image-"));
    const out = await mustRun(join(repoRoot, "guest", "build-image"), [
      "--dry-run",
      "--arch",
      "amd64",
      "--out",
      dir,
    ]);
    const split = out.indexOf("\n\n");
    qemuArgs = out.slice(0, split).split("\n");
    manifest = JSON.parse(out.slice(split + 2)) as Record<string, unknown>;
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  interface PciDevice {
    slot: number;
    class_info: { class: number };
    id: { vendor: number; device: number };
  }

  describe("guest/build-image", () => {
    it("names the machine the CLI makes a pulled copy of it boot with (a release has no manifest)", () => {
      expect(manifest).toEqual({
        schema: 2,
        name: "stack-emulator-amd64",
        arch: "amd64",
        digest: "sha256:<digest of stack-emulator-amd64.qcow2>",
        boot: { firmware: "bios" },
        disk: "stack-emulator-amd64.qcow2",
        memoryMiB: 4096,
        cpus: 4,
      });
      // The CLI's own synthesis, but for the name it stores a pull under and the digest of the bytes it got.
      const ours = releaseManifest("release-x", "amd64", "sha256:ab");
      expect({ ...ours, name: manifest.name, digest: manifest.digest }).toEqual(manifest);
      expect(qemuArgs.slice(0, 3)).toEqual(["qemu-system-x86_64", "-machine", "q35"]);
      expect(qemuArgs[qemuArgs.indexOf("-m") + 1]).toBe("4096");
      expect(qemuArgs[qemuArgs.indexOf("-smp") + 1]).toBe("4");
    });

    it("boots arm64 through UEFI with a private variable store and the same devices", async () => {
      const out = await mustRun(join(repoRoot, "guest", "build-image"), [
        "--dry-run",
        "--arch",
        "arm64",
        "--out",
        dir,
      ]);
      const [args, json] = out.split("\n\n");
      const argv = args!.split("\n");
      expect(argv[0]).toBe("qemu-system-aarch64");
      expect(argv[argv.indexOf("-machine") + 1]).toBe("virt");
      expect(argv.filter((a) => a.startsWith("if=pflash"))).toEqual([
        expect.stringMatching(/^if=pflash,format=raw,unit=0,readonly=on,file=/),
        `if=pflash,format=raw,unit=1,file=${join(dir, "work-arm64", "efivars.fd")}`,
      ]);
      const devices = (a: string[]) => a.filter((x) => x.includes("addr=0x"));
      expect(devices(argv)).toEqual(devices(qemuArgs));
      expect(JSON.parse(json!)).toMatchObject({
        name: "stack-emulator-arm64",
        arch: "arm64",
        boot: { firmware: "uefi" },
      });
      // vmgenid is the PC machines' only.
      expect(argv).not.toContain("vmgenid,guid=auto");
      expect(qemuArgs).toContain("vmgenid,guid=auto");
    });

    // setup installs qemu-system-x86 on x86 hosts only; elsewhere there is no emulator to start the layout in.
    it.runIf(hasX86Qemu)("boots QEMU with the documented, pinned device layout", async () => {
      const work = join(dir, "work-amd64");
      await mkdir(join(work, "iso"), { recursive: true });
      await writeFile(join(work, "iso", "runtime.env"), "STACK_EMULATOR_PORT_PREFIX=81\n");
      await mustRun("qemu-img", ["create", "-q", "-f", "qcow2", join(work, "disk.qcow2"), "64M"]);
      for (const [iso, label] of [
        ["config.iso", "STACKCFG"],
        ["seed.iso", "cidata"],
        ["bundle.iso", "STACKBUNDLE"],
      ] as const) {
        await mustRun("xorriso", [
          "-as",
          "mkisofs",
          "-quiet",
          "-V",
          label,
          "-o",
          join(work, iso),
          join(work, "iso"),
        ]);
      }
      const [qemu, ...args] = qemuArgs;
      // Paused before the first instruction: only the machine as configured is inspected, over QMP on stdio.
      const r = await run(qemu!, [...args, "-S", "-qmp", "stdio"], {
        input: ['{"execute":"qmp_capabilities"}', '{"execute":"query-pci"}', '{"execute":"quit"}', ""].join(
          "\n",
        ),
      });
      expect(r.stderr).toBe("");
      const replies = r.stdout
        .split("\n")
        .filter((l) => l.startsWith("{"))
        .map((l) => JSON.parse(l) as { return?: { devices: PciDevice[] }[] });
      const pci = replies.find((m) => Array.isArray(m.return))?.return?.[0]?.devices ?? [];
      const bySlot = new Map(pci.map((d) => [d.slot, d]));
      const RED_HAT_VIRTIO = 0x1af4;
      const RED_HAT_QEMU = 0x1b36;
      const expected: [number, number, number][] = [
        [2, RED_HAT_VIRTIO, 0x0200], // network: virtio-net, the pinned MAC
        [3, RED_HAT_VIRTIO, 0x0100], // storage: system disk
        [4, RED_HAT_VIRTIO, 0x0100], // storage: STACKCFG
        [5, RED_HAT_VIRTIO, 0x0780], // communication: virtio-serial, the guest agent's port
        [6, RED_HAT_VIRTIO, 0x00ff], // virtio-rng
        [7, RED_HAT_VIRTIO, 0x0100], // storage: cloud-init seed
        [8, RED_HAT_QEMU, 0x0604], // bridge: the PCIe root port the host's 9p share is plugged into
        [9, RED_HAT_VIRTIO, 0x0100], // storage: STACKBUNDLE
      ];
      for (const [slot, vendor, cls] of expected) {
        expect(bySlot.get(slot)?.id.vendor, `slot ${slot}`).toBe(vendor);
        expect(bySlot.get(slot)?.class_info.class, `slot ${slot}`).toBe(cls);
      }
      expect(pci.filter((d) => d.id.vendor === RED_HAT_VIRTIO).length).toBe(7);
    });
  });
});

// No Docker daemon here: what can go stale between the Dockerfile and the files it ships.
describe("Dockerfile consistency", () => {
  const dockerfile = () => readFile(join(dockerDir, "Dockerfile"), "utf8");

  describe("docker/Dockerfile", () => {
    it("sets every variable supervisord.conf expands", async () => {
      const conf = await readFile(join(dockerDir, "supervisord.conf"), "utf8");
      const needed = new Set([...conf.matchAll(/%\(ENV_([A-Z0-9_]+)\)s/g)].map((m) => m[1]));
      expect(needed.size).toBeGreaterThan(5);
      const text = await dockerfile();
      for (const name of needed) expect(text, name).toMatch(new RegExp(`\\b${name}=`));
    });

    it("copies files that exist, to the paths the scripts and the config use", async () => {
      const text = await dockerfile();
      const copies = [...text.matchAll(/^COPY (?:--\S+ )*(\S+) (\S+)$/gm)].map(
        (m) => [m[1]!, m[2]!] as const,
      );
      expect(copies.length).toBe(6);
      for (const [src] of copies) await access(join(dockerDir, src));
      const dest = new Map(copies);
      expect(dest.get("lib/secret-input.sh")).toBe("/usr/local/lib/stack-emulator/secret-input.sh");
      // rotate-secrets runs the supervisord client from beside secret-input.sh.
      expect(dest.get("lib/supervisor-control.py")).toBe(
        "/usr/local/lib/stack-emulator/supervisor-control.py",
      );
      expect(dest.get("rotate-secrets")).toBe("/usr/local/bin/rotate-secrets");
      // The defaults baked into the scripts match where the image puts things.
      const rotate = await readFile(join(dockerDir, "rotate-secrets"), "utf8");
      expect(rotate).toContain(`STACK_SUPERVISOR_CONFIG:-${dest.get("supervisord.conf")}`);
      expect(rotate).toContain("STACK_EMULATOR_LIB:-/usr/local/lib/stack-emulator}");
      expect(text).toContain(`ENTRYPOINT ["${dest.get("entrypoint.sh")}"]`);
      // entrypoint (secrets) -> prepare-app -> supervisord with the shipped config.
      expect(text).toContain(
        `CMD ["${dest.get("prepare-app")}", "supervisord", "-c", "${dest.get("supervisord.conf")}"]`,
      );
    });
  });
});
