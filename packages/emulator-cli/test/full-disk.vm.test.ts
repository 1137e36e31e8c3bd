// A home whose file system fills while the guest writes: the VM pauses, status names the full disk, start says how
// much is free, and once there is room start continues the guest where it stopped, the write included.
import { execFileSync } from "node:child_process";
import { mkdirSync, rmSync, statfsSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { devImageFixture, type Instance, runCli } from "./helpers.js";
import { getValue, putValue } from "./interrupt.js";

const TIMEOUT = 600_000;
const dev = devImageFixture();
// Mounting a small file system for the home takes root.
const asRoot = process.getuid?.() === 0;
const mounted: Instance[] = [];

// Before the fixture's own clean-up (hooks run last registered first): its QEMU must not outlive the home.
afterEach(async () => {
  for (const inst of mounted.splice(0)) {
    await runCli(["stop", "--no-save"], inst.env);
    execFileSync("umount", ["-l", inst.home]);
    rmSync(`${inst.home}.ext4`, { force: true });
  }
}, 120_000);

/**
 * An instance whose home is an ext4 file system of `mib` MiB on a loop device: a real disk's behaviour (a tmpfs
 * would also have to allocate on the guest's reads of the RAM file's holes, and QEMU would die of SIGBUS instead).
 */
async function onSmallHome(mib: number): Promise<Instance> {
  const inst = await dev.instance();
  const image = `${inst.home}.ext4`;
  execFileSync("truncate", ["-s", `${mib}M`, image]);
  // No blocks reserved for root: QEMU, run by root here, would write into them.
  execFileSync("mkfs.ext4", ["-q", "-m", "0", image]);
  mkdirSync(inst.home, { recursive: true });
  execFileSync("mount", ["-o", "loop", image, inst.home]);
  mounted.push(inst);
  return inst;
}

/** Fills the file system of `dir` but for `leaveKiB`. */
function fill(dir: string, leaveKiB: number): string {
  const { bavail, bsize } = statfsSync(dir);
  const filler = join(dir, "filler");
  const bytes = bavail * bsize - leaveKiB * 1024;
  execFileSync("fallocate", ["-l", String(bytes), filler]);
  return filler;
}

describe("a home whose disk fills", () => {
  it.runIf(asRoot)(
    "pauses the VM; status and start name the full disk; with room again start continues it, nothing lost",
    async () => {
      const inst = await onSmallHome(1024);
      const started = await runCli(["start", "--json"], inst.env);
      expect(started.code, started.stderr).toBe(0);
      const filler = fill(inst.home, 256);
      // A write the guest syncs to its disk: the disk cannot grow, QEMU pauses the guest (werror=enospc).
      const pending = putValue(inst, "big", "x".repeat(900 * 1024)).then(
        () => "written",
        (error: Error) => error.message,
      );
      let status = await runCli(["status", "--json"], inst.env);
      for (let i = 0; i < 60 && status.json?.vm !== "io-error"; i++) {
        await new Promise((r) => setTimeout(r, 1000));
        status = await runCli(["status", "--json"], inst.env);
      }
      expect(status.json.state).toBe("broken");
      expect(status.json.problem).toMatch(/failed disk write .* free/);
      expect(status.json.problem).toContain(inst.home);

      const refused = await runCli(["start", "--json"], inst.env);
      expect(refused.code).toBe(1);
      expect(refused.json.error.code, refused.stdout).toBe("NO_SPACE");

      rmSync(filler);
      const continued = await runCli(["start", "--json"], inst.env);
      expect(continued.code, continued.stderr).toBe(0);
      expect(continued.json.alreadyRunning).toBe(true);
      expect(continued.stderr).toMatch(/continuing the VM that paused when the disk filled/);
      expect(await pending).toBe("written");
      expect(await getValue(inst, "big")).toHaveLength(900 * 1024);
    },
    TIMEOUT,
  );
});
