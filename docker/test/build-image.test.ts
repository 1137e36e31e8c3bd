// guest/build-image needs the internet and a long boot, so CI never runs a build. What it can check offline:
// the pinned device layout is one QEMU accepts and puts where the documentation says, and the manifest it
// writes is the image.json the CLI reads.
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mustRun, repoRoot, run } from "./harness.js";

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
  it("writes the image.json the CLI boots from", () => {
    expect(manifest).toMatchObject({
      schema: 1,
      name: "stack-emulator-amd64",
      arch: "amd64",
      boot: { firmware: "bios" },
      disk: "stack-emulator-amd64.qcow2",
      configIso: { volumeId: "STACKCFG" },
      guest: {
        rotateSecrets: "/usr/local/bin/trigger-fast-rotate",
        applyConfig: "/usr/local/bin/apply-runtime-config",
        waitReady: "/usr/local/bin/wait-for-stack-ready",
      },
      secrets: [
        "STACK_PUBLISHABLE_CLIENT_KEY",
        "STACK_SECRET_SERVER_KEY",
        "STACK_SUPER_SECRET_ADMIN_KEY",
        "CRON_SECRET",
      ],
    });
    const services = manifest.services as { name: string; guestPort: number; defaultHostPort: number }[];
    expect(services.map((s) => [s.name, s.guestPort, s.defaultHostPort])).toEqual([
      ["dashboard", 8101, 26700],
      ["backend", 8102, 26701],
      ["minio", 8103, 26702],
      ["inbucket", 8104, 26703],
    ]);
  });

  it("boots QEMU with the documented, pinned device layout", async () => {
    const work = join(dir, "work-amd64");
    await mkdir(join(work, "iso"), { recursive: true });
    await writeFile(join(work, "iso", "stack.env"), "STACK_A=1\n");
    await mustRun("qemu-img", ["create", "-q", "-f", "qcow2", join(work, "disk.qcow2"), "64M"]);
    for (const [iso, label] of [
      ["config.iso", "STACKCFG"],
      ["seed.iso", "cidata"],
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
    const expected: [number, number][] = [
      [2, 0x0200], // network: virtio-net, the pinned MAC
      [3, 0x0100], // storage: system disk
      [4, 0x0100], // storage: STACKCFG
      [5, 0x0780], // communication: virtio-serial, the guest agent's port
      [6, 0x00ff], // virtio-rng
      [7, 0x0100], // storage: cloud-init seed
    ];
    for (const [slot, cls] of expected) {
      expect(bySlot.get(slot)?.id.vendor, `slot ${slot}`).toBe(RED_HAT_VIRTIO);
      expect(bySlot.get(slot)?.class_info.class, `slot ${slot}`).toBe(cls);
    }
  });
});
