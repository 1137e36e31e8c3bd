import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { PUBLISHABLE_KEY_NAME } from "../src/contract/contract.js";
import {
  apiStatus,
  devImageFixture,
  expectKeysReplaced,
  keysOf,
  placeholderPublishableKey,
  runCli,
} from "./helpers.js";

// An arm64 guest under TCG on this amd64 machine: a cold boot takes 15-25 s, the whole file about a minute.
const TIMEOUT = 300_000;
const dev = devImageFixture("arm64");

describe("the arm64 dev image on virt", () => {
  it(
    "cold boots and captures, resumes with fresh keys, quick-boots with the same keys",
    async () => {
      const inst = await dev.instance();
      const stackEmulator = async (...args: string[]) => {
        const result = await runCli([...args, "--json"], inst.env);
        expect(result.code, result.stderr).toBe(0);
        return result.json;
      };

      const first = await stackEmulator("start");
      expect(first.boot).toBe("snapshot");
      expect(first.snapshotMethod).toBe("x-ignore-shared");
      expect(first.rotation).toBe("rotated");
      const status = await stackEmulator("status");
      expect(status.image).toContain("stack-emulator-dev-arm64");
      expect(status.services.map((s: { healthy: boolean }) => s.healthy)).toEqual([true, true, true, true]);
      const keys = keysOf(inst);
      expect(await apiStatus(inst, keys[PUBLISHABLE_KEY_NAME] as string)).toBe(200);
      expect(await apiStatus(inst, placeholderPublishableKey())).toBe(401);

      // A resume of the pristine snapshot gives this install new keys; the placeholder and the old keys are dead.
      await stackEmulator("reset");
      const resumed = await stackEmulator("start");
      expect(resumed.boot).toBe("snapshot");
      const fresh = await expectKeysReplaced(inst, keys);

      expect((await stackEmulator("stop")).saved).toBe(true);
      const quick = await stackEmulator("start");
      expect(quick.boot).toBe("quick-boot");
      expect(keysOf(inst)).toEqual(fresh);
      expect(await apiStatus(inst, fresh[PUBLISHABLE_KEY_NAME] as string)).toBe(200);

      // The power button (a gpio-keys key on virt: no firmware, no ACPI) shuts the guest down by itself.
      await stackEmulator("stop", "--no-save");
      const serial = readFileSync(join(inst.home, "instances", "default", "serial.log"), "utf8");
      expect(serial).toMatch(/reboot: Power down\s*$/);
    },
    TIMEOUT,
  );
});
