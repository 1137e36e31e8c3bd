import { execFile } from "node:child_process";
import { chown } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";
import { promisify } from "node:util";
import { beforeAll, describe, expect, it } from "vitest";
import {
  type AcceleratorChoice,
  type ChooseAcceleratorOptions,
  chooseAccelerator,
  HostDetectError,
  probeQemu,
  type QemuAbilities,
} from "../src/index.js";
import { put, REAL_QEMU, tempRoot } from "./helpers.js";

const run = promisify(execFile);
const tsx = createRequire(import.meta.url).resolve("tsx/cli");
const fixture = path.join(import.meta.dirname, "fixtures", "choose-accel.mts");
const asRoot = process.getuid?.() === 0;

let abilities: QemuAbilities;
beforeAll(async () => {
  abilities = await probeQemu(REAL_QEMU);
});

/**
 * The /dev/kvm check asks the kernel (access(2)) rather than comparing mode bits, so as root every file passes.
 * The denied cases therefore run the same code in a child process, which becomes `nobody` when started as root.
 */
async function chooseAsUnprivileged(
  opts: ChooseAcceleratorOptions,
): Promise<AcceleratorChoice | { error: string }> {
  const { stdout } = await run(process.execPath, [tsx, fixture, JSON.stringify(opts)]);
  return JSON.parse(stdout);
}

/** The accelerator choice on an amd64 Linux host with the file system under `root`, made by the `nobody` user. */
async function chooseOnLinuxAsNobody(root: string): Promise<AcceleratorChoice> {
  return (await chooseAsUnprivileged({
    abilities,
    root,
    os: "linux",
    hostArch: "amd64",
    env: {},
  })) as AcceleratorChoice;
}

function choose(
  opts: Omit<ChooseAcceleratorOptions, "abilities"> & {
    abilities?: QemuAbilities | { accelerators: string[] };
  },
) {
  return chooseAccelerator({ os: "linux", hostArch: "amd64", env: {}, abilities, ...opts });
}

function errorCode(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (error) {
    return error instanceof HostDetectError ? error.code : `not typed: ${String(error)}`;
  }
  return undefined;
}

describe("chooseAccelerator with the real QEMU's abilities", () => {
  it("falls back to tcg when /dev/kvm does not exist, saying why for every other option", async () => {
    const root = await tempRoot();
    const choice = choose({ root });
    expect(choice.accel).toBe("tcg");
    expect(choice.overridden).toBe(false);
    expect(choice.kvmDevice).toMatchObject({ exists: false, readWrite: false });
    expect(choice.rejected.map((r) => r.accel).sort()).toEqual(["hvf", "kvm", "whpx"]);
    expect(choice.rejected.find((r) => r.accel === "kvm")!.reason).toMatch(/does not exist/);
    expect(choice.rejected.find((r) => r.accel === "hvf")!.reason).toMatch(/only available on macOS/);
  });

  it("chooses kvm when /dev/kvm is readable and writable", async () => {
    const root = await tempRoot();
    await put(root, "dev/kvm", "", 0o666);
    expect(abilities.accelerators).toContain("kvm");
    const choice = choose({ root });
    expect(choice.accel).toBe("kvm");
    expect(choice.kvmDevice).toMatchObject({ exists: true, readWrite: true });
    expect(choice.rejected.find((r) => r.accel === "tcg")!.reason).toMatch(/kvm is preferred/);
  });

  it("rejects /dev/kvm mode 0600 owned by root for an unprivileged user, with the usermod fix", async () => {
    const root = await tempRoot();
    await put(root, "dev/kvm", "", 0o600);
    const choice = await chooseOnLinuxAsNobody(root);
    expect(choice.accel).toBe("tcg");
    expect(choice.kvmDevice).toMatchObject({ exists: true, readWrite: false });
    // Its group has no access, so joining the group would not help.
    expect(choice.kvmDevice?.fix).toMatch(/chmod 0660 \/dev\/kvm.*udev rule/);
    expect(choice.rejected.find((r) => r.accel === "kvm")!.reason).toMatch(/mode 0600.*chmod 0660/);
  });

  it.runIf(asRoot)("tells a user outside the device's group to join it", async () => {
    const root = await tempRoot();
    await put(root, "etc/group", "root:x:0:\nkvm:x:4242:\n");
    const device = await put(root, "dev/kvm", "", 0o660);
    await chown(device, 0, 4242);
    const choice = await chooseOnLinuxAsNobody(root);
    expect(choice.accel).toBe("tcg");
    expect(choice.kvmDevice).toMatchObject({
      group: "kvm",
      fix: "run `sudo usermod -aG kvm $USER`, then log out and back in",
    });
  });

  it("accepts /dev/kvm mode 0666 for an unprivileged user", async () => {
    const root = await tempRoot();
    await put(root, "dev/kvm", "", 0o666);
    const choice = await chooseOnLinuxAsNobody(root);
    expect(choice.accel).toBe("kvm");
  });

  // Needs root to give the fake device a group and to become `nobody`.
  it.runIf(asRoot)(
    "tells a user listed in the kvm group but not in this session to log in again",
    async () => {
      const root = await tempRoot();
      await put(root, "etc/group", "root:x:0:\nkvm:x:4242:nobody\n");
      const device = await put(root, "dev/kvm", "", 0o660);
      await chown(device, 0, 4242);
      const choice = await chooseOnLinuxAsNobody(root);
      expect(choice.accel).toBe("tcg");
      expect(choice.kvmDevice?.group).toBe("kvm");
      expect(choice.kvmDevice?.problem).toMatch(/nobody joined kvm after this session started/);
      expect(choice.kvmDevice?.fix).toBe("log out and back in (or run `newgrp kvm`)");
    },
  );

  it.runIf(asRoot)("lets root use /dev/kvm whatever its mode bits, as the kernel does", async () => {
    const root = await tempRoot();
    await put(root, "dev/kvm", "", 0o000);
    expect(choose({ root }).accel).toBe("kvm");
  });

  it("skips an accelerator the caller ruled out (a kvm boot that made no progress) and keeps the facts", async () => {
    const root = await tempRoot();
    await put(root, "dev/kvm", "", 0o666);
    const choice = choose({
      root,
      exclude: [{ accel: "kvm", reason: "a kvm boot made no progress on this host" }],
    });
    expect(choice.accel).toBe("tcg");
    expect(choice.rejected).toContainEqual({
      accel: "kvm",
      reason: "a kvm boot made no progress on this host",
    });
    expect(choice.kvmDevice).toMatchObject({ exists: true, readWrite: true });
  });

  it("does not use kvm for a guest of another architecture", async () => {
    const root = await tempRoot();
    await put(root, "dev/kvm", "", 0o666);
    const choice = choose({ root, guestArch: "arm64" });
    expect(choice.accel).toBe("tcg");
    expect(choice.rejected.find((r) => r.accel === "kvm")!.reason).toMatch(/not arm64/);
  });
});

describe("EMULATOR_ACCEL", () => {
  it("overrides the choice when valid", async () => {
    const root = await tempRoot();
    await put(root, "dev/kvm", "", 0o666);
    const choice = choose({ root, env: { EMULATOR_ACCEL: " TCG " } });
    expect(choice).toMatchObject({ accel: "tcg", overridden: true });
    expect(choice.rejected).toContainEqual({ accel: "kvm", reason: "EMULATOR_ACCEL=tcg selects tcg" });
    expect(choose({ root, env: { EMULATOR_ACCEL: "kvm" } }).accel).toBe("kvm");
  });

  it("rejects unknown names, accelerators the QEMU or host lacks", async () => {
    const root = await tempRoot();
    expect(errorCode(() => choose({ root, env: { EMULATOR_ACCEL: "fast" } }))).toBe("ACCEL_OVERRIDE_INVALID");
    expect(errorCode(() => choose({ root, env: { EMULATOR_ACCEL: "hvf" } }))).toBe("ACCEL_OVERRIDE_INVALID");
    expect(errorCode(() => choose({ root, env: { EMULATOR_ACCEL: "kvm" } }))).toBe("ACCEL_OVERRIDE_INVALID");
    expect(
      errorCode(() => choose({ root, env: { EMULATOR_ACCEL: "tcg" }, abilities: { accelerators: ["kvm"] } })),
    ).toBe("ACCEL_OVERRIDE_INVALID");
    // An empty value means "not set".
    expect(choose({ root, env: { EMULATOR_ACCEL: "" } }).accel).toBe("tcg");
  });
});

describe("other platforms", () => {
  it("uses hvf on macOS when Hypervisor.framework is supported, tcg when not", () => {
    const macQemu = { accelerators: ["hvf", "tcg"] };
    const mac = { os: "darwin", hostArch: "arm64", abilities: macQemu };
    expect(choose({ ...mac, hvSupport: true }).accel).toBe("hvf");
    const without = choose({ ...mac, hvSupport: false });
    expect(without.accel).toBe("tcg");
    expect(without.rejected.find((r) => r.accel === "hvf")!.reason).toMatch(/kern.hv_support/);
    expect(without.kvmDevice).toBeUndefined();
  });

  it("uses whpx on Windows when QEMU has it", () => {
    expect(choose({ os: "windows", abilities: { accelerators: ["whpx", "tcg"] } }).accel).toBe("whpx");
    expect(choose({ os: "windows", abilities: { accelerators: ["tcg"] } }).accel).toBe("tcg");
  });

  it("fails with NO_ACCELERATOR when nothing is usable", async () => {
    const root = await tempRoot();
    expect(errorCode(() => choose({ root, abilities: { accelerators: ["kvm"] } }))).toBe("NO_ACCELERATOR");
  });
});
