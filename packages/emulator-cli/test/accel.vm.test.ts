// The accelerator is chosen by proof, and a hardware accelerator that fails anyway falls back to tcg. This host's
// own /dev/kvm never decides anything here: every run sees a /dev/kvm that opens (a private mount namespace), and
// a wrapper around the real QEMU fails under kvm the ways broken hosts do (see brokenKvmQemu).

import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { brokenKvmQemu, type KvmFailure } from "../../host-detect/test/helpers.js";
import { devImageFixture, expectKeysAsReported, type Instance, instanceFiles, runCli } from "./helpers.js";

const TIMEOUT = 600_000;
const dev = devImageFixture();

/** An instance whose QEMU fails under kvm as `failure` says; no EMULATOR_ACCEL unless `accel` is given. */
async function instanceWith(failure: KvmFailure, accel?: string): Promise<Instance> {
  const inst = await dev.instance();
  inst.env.EMULATOR_QEMU_AMD64 = await brokenKvmQemu(failure);
  inst.env.STACK_EMULATOR_ACCEL_PROOF_TIMEOUT = "3";
  inst.env.STACK_EMULATOR_KVM_PROGRESS_TIMEOUT = "5";
  if (accel) inst.env.EMULATOR_ACCEL = accel;
  else delete inst.env.EMULATOR_ACCEL;
  return inst;
}

const start = (inst: Instance) => runCli(["start", "--json"], inst.env, { kvmDevice: true });

interface RememberedAccel {
  accel: string;
  works: boolean;
  reason: string;
  qemu: string;
}

function remembered(inst: Instance): RememberedAccel[] {
  return JSON.parse(readFileSync(join(inst.home, "host.json"), "utf8")).accelerators;
}

/** A start that fell back to tcg ends healthy with this install's keys, and says why once. */
async function expectTcgFallback(inst: Instance, reason: RegExp) {
  const first = await start(inst);
  expect(first.code, first.stderr).toBe(0);
  expect(first.json.accel).toBe("tcg");
  await expectKeysAsReported(inst.backend, first.json);
  expect(first.stderr.match(reason)?.length, first.stderr).toBe(1);
  const kvm = remembered(inst).find((r) => r.accel === "kvm");
  expect(kvm).toMatchObject({ works: false, qemu: inst.env.EMULATOR_QEMU_AMD64 });
  expect(kvm?.reason).toMatch(reason);

  // Remembered: the next start goes straight to tcg and does not repeat the story.
  expect((await runCli(["stop"], inst.env)).code).toBe(0);
  const second = await start(inst);
  expect(second.code, second.stderr).toBe(0);
  expect(second.json).toMatchObject({ accel: "tcg", boot: "quick-boot" });
  expect(second.stderr).not.toMatch(reason);
  await expectKeysAsReported(inst.backend, second.json);
  return first;
}

describe("kvm is used only once proven, and a kvm that fails falls back to tcg", () => {
  it(
    "a QEMU that aborts under kvm (failed to set MSR) fails the proof: tcg, the reason shown once and remembered",
    async () => {
      const inst = await instanceWith("abort");
      const first = await expectTcgFallback(inst, /failed to set MSR 0x10a/g);
      expect(first.stderr).toMatch(/kvm cannot run guests on this host/);

      const doctor = await runCli(["doctor", "--json"], inst.env, { kvmDevice: true });
      const accel = doctor.json.checks.find((c: { id: string }) => c.id === "accelerator");
      expect(accel.status).toBe("warn");
      expect(accel.detail).toMatch(/^tcg; kvm: it failed its proof run: .*failed to set MSR 0x10a/);
    },
    TIMEOUT,
  );

  it(
    "a kvm guest that never runs fails the proof at its deadline",
    async () => {
      await expectTcgFallback(await instanceWith("silent"), /kvm guest ran no code within 3000 ms/g);
    },
    TIMEOUT,
  );

  it(
    "a kvm that passes the proof but aborts the real boot falls back to tcg at once",
    async () => {
      await expectTcgFallback(await instanceWith("abort-on-boot"), /QEMU failed to start under kvm/g);
    },
    TIMEOUT,
  );

  it(
    "a kvm that passes the proof but stalls the real kernel is caught by the no-progress watchdog",
    async () => {
      await expectTcgFallback(await instanceWith("silent-on-boot"), /a kvm boot printed nothing in 5 s/g);
    },
    TIMEOUT,
  );

  it(
    "an explicit EMULATOR_ACCEL=kvm that fails says so and is not replaced; its error names only files that exist",
    async () => {
      for (const failure of ["abort", "abort-on-boot"] as const) {
        const inst = await instanceWith(failure, "kvm");
        const result = await start(inst);
        expect(result.code, result.stderr).toBe(1);
        expect(result.json.error.code, result.stderr).toBe("ACCEL_UNUSABLE");
        expect(result.json.error.message).toMatch(/^EMULATOR_ACCEL=kvm/);
        expect(result.stderr).toMatch(/failed to set MSR 0x10a/);
        expect(result.stderr).toMatch(/unset EMULATOR_ACCEL/i);
        for (const path of result.stderr.match(/\/[^\s;:,)]+/g) ?? []) {
          if (path.startsWith(inst.home)) expect(existsSync(path), path).toBe(true);
        }
        expect(existsSync(instanceFiles(inst.home).state)).toBe(false);
      }
    },
    TIMEOUT,
  );
});
