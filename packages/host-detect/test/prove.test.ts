import { existsSync } from "node:fs";
import { describe, expect, it } from "vitest";
import {
  type AcceleratorProof,
  chooseProvenAccelerator,
  HostDetectError,
  proveAccelerator,
} from "../src/index.js";
import { brokenKvmQemu, put, REAL_QEMU, tempRoot } from "./helpers.js";

const ARM64_QEMU = "/usr/bin/qemu-system-aarch64";
const abilities = { accelerators: ["tcg", "kvm"] };

/** A root whose /dev/kvm opens read-write: the device is there, whether it works is for the proof to say. */
async function rootWithKvmDevice(): Promise<string> {
  const root = await tempRoot();
  await put(root, "dev/kvm", "", 0o666);
  return root;
}

async function chooseOnLinux(
  qemu: string,
  extra: { env?: NodeJS.ProcessEnv; known?: AcceleratorProof[] } = {},
) {
  return chooseProvenAccelerator({
    qemu,
    abilities,
    guestArch: "amd64",
    os: "linux",
    hostArch: "amd64",
    root: await rootWithKvmDevice(),
    env: extra.env ?? {},
    timeoutMs: 2_000,
    ...(extra.known ? { known: extra.known } : {}),
  });
}

describe("proveAccelerator runs guest code under the accelerator", () => {
  it("an amd64 guest under tcg writes its proof value to isa-debug-exit", async () => {
    const proof = await proveAccelerator({ qemu: REAL_QEMU, accel: "tcg", arch: "amd64" });
    expect(proof).toMatchObject({ accel: "tcg", arch: "amd64", works: true });
    expect(proof.reason).toMatch(/ran its proof code/);
  });

  it.runIf(existsSync(ARM64_QEMU))("an arm64 guest under tcg prints its marker and powers off", async () => {
    const proof = await proveAccelerator({ qemu: ARM64_QEMU, accel: "tcg", arch: "arm64" });
    expect(proof).toMatchObject({ accel: "tcg", arch: "arm64", works: true });
  });

  it("a QEMU that aborts under kvm is answered with QEMU's own message, not thrown", async () => {
    const proof = await proveAccelerator({ qemu: await brokenKvmQemu("abort"), accel: "kvm", arch: "amd64" });
    expect(proof.works).toBe(false);
    expect(proof.reason).toContain("exited with status 1 before the kvm guest ran any code");
    expect(proof.reason).toContain("failed to set MSR 0x10a");
  });

  it("a guest that never runs is ruled out at the deadline", async () => {
    const proof = await proveAccelerator({
      qemu: await brokenKvmQemu("silent"),
      accel: "kvm",
      arch: "amd64",
      timeoutMs: 1_500,
    });
    expect(proof.works).toBe(false);
    expect(proof.reason).toMatch(/kvm guest ran no code within 1500 ms/);
  });

  it("a QEMU that exits 0 without running the code does not pass", async () => {
    const root = await tempRoot();
    const liar = await put(root, "bin/qemu", "#!/bin/sh\nexit 0\n", 0o755);
    const proof = await proveAccelerator({ qemu: liar, accel: "kvm", arch: "amd64" });
    expect(proof.works).toBe(false);
    expect(proof.reason).toMatch(/exited with status 0 before the kvm guest ran any code/);
  });
});

describe("chooseProvenAccelerator", () => {
  it("chooses kvm once a guest ran under it", async () => {
    // The wrapper runs a kvm guest under tcg: what is proven is the choice logic, not this host's kvm.
    const choice = await chooseOnLinux(await brokenKvmQemu("abort-on-boot"));
    expect(choice.accel).toBe("kvm");
    expect(choice.proof?.works).toBe(true);
    expect(choice.proofs).toHaveLength(1);
  });

  it("falls to tcg when kvm fails its proof, with QEMU's reason in the rejection", async () => {
    const choice = await chooseOnLinux(await brokenKvmQemu("abort"));
    expect(choice.accel).toBe("tcg");
    expect(choice.overridden).toBe(false);
    expect(choice.proof).toMatchObject({ accel: "kvm", works: false });
    const kvm = choice.rejected.find((r) => r.accel === "kvm");
    expect(kvm?.reason).toMatch(/^it failed its proof run: .*failed to set MSR 0x10a/);
  });

  it("reuses a known answer instead of proving again", async () => {
    const known: AcceleratorProof[] = [
      { accel: "kvm", arch: "amd64", works: false, reason: "remembered failure", ms: 5 },
    ];
    // A QEMU that would pass: the remembered failure must win without running it.
    const choice = await chooseOnLinux(await brokenKvmQemu("abort-on-boot"), { known });
    expect(choice.accel).toBe("tcg");
    expect(choice.proofs).toEqual([]);
    expect(choice.rejected.find((r) => r.accel === "kvm")?.reason).toContain("remembered failure");
  });

  it("proves an explicit EMULATOR_ACCEL=kvm afresh and fails clearly instead of replacing it", async () => {
    const known: AcceleratorProof[] = [{ accel: "kvm", arch: "amd64", works: false, reason: "old", ms: 5 }];
    const working = await chooseOnLinux(await brokenKvmQemu("abort-on-boot"), {
      env: { EMULATOR_ACCEL: "kvm" },
      known,
    });
    expect(working).toMatchObject({ accel: "kvm", overridden: true });
    expect(working.proofs).toHaveLength(1);

    const failing = await chooseOnLinux(await brokenKvmQemu("abort"), {
      env: { EMULATOR_ACCEL: "kvm" },
    }).catch((error: unknown) => error);
    expect(failing).toBeInstanceOf(HostDetectError);
    expect((failing as HostDetectError).code).toBe("ACCEL_UNUSABLE");
    expect((failing as Error).message).toMatch(
      /^EMULATOR_ACCEL=kvm cannot run a guest on this host: .*MSR 0x10a/,
    );
    expect((failing as Error).message).toContain("Unset EMULATOR_ACCEL");
  });

  it("does not prove tcg", async () => {
    const choice = await chooseProvenAccelerator({
      qemu: "/nonexistent/qemu",
      abilities: { accelerators: ["tcg"] },
      guestArch: "amd64",
      os: "linux",
      hostArch: "amd64",
      env: {},
    });
    expect(choice).toMatchObject({ accel: "tcg", proofs: [] });
  });
});
