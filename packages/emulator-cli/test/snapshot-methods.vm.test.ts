import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { currentSnapshotDir, devImageFixture, type Instance, instanceFiles, runCli } from "./helpers.js";

const TIMEOUT = 600_000;
const dev = devImageFixture();

async function health(inst: Instance): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${inst.backend}/health?db=1`);
  await res.arrayBuffer();
  return res.status;
}

describe("snapshot methods beyond x-ignore-shared", () => {
  it(
    "without a RAM file the snapshot is a zstd-compressed stream, resumed and quick-booted like the other",
    async () => {
      const inst = await dev.instance();
      const env = { ...inst.env, STACK_EMULATOR_SNAPSHOT_METHOD: "stream" };
      const first = await runCli(["start", "--json"], env);
      expect(first.code, first.stderr).toBe(0);
      expect(first.json.boot).toBe("snapshot");
      expect(first.json.snapshotMethod).toBe("exec");
      const dir = currentSnapshotDir(inst.home, dev.imageName) as string;
      const manifest = JSON.parse(readFileSync(join(dir, "snapshot.json"), "utf8"));
      expect(manifest.compressed).toBe(true);
      expect(manifest.ramBytes).toBe(0);
      expect(existsSync(join(dir, "ram"))).toBe(false);
      // zstd frame magic
      expect(readFileSync(join(dir, "state.zst")).subarray(0, 4).toString("hex")).toBe("28b52ffd");
      expect(await health(inst)).toBe(200);
      expect(existsSync(instanceFiles(inst.home).restoreState)).toBe(false);

      expect((await runCli(["stop"], env)).code).toBe(0);
      const again = await runCli(["start", "--json"], env);
      expect(again.code, again.stderr).toBe(0);
      expect(again.json.boot).toBe("quick-boot");
      expect(await health(inst)).toBe(200);
    },
    TIMEOUT,
  );

  it(
    "rejects an unknown snapshot method by name",
    async () => {
      const inst = await dev.instance();
      const result = await runCli(["start", "--json"], {
        ...inst.env,
        STACK_EMULATOR_SNAPSHOT_METHOD: "teleport",
      });
      expect(result.code).toBe(1);
      expect(result.json.error.message).toContain("STACK_EMULATOR_SNAPSHOT_METHOD=teleport");
    },
    TIMEOUT,
  );
});
