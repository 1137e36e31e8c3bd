// Faults that need no VM: hostile inputs and broken state files, each through the CLI (in this process).
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { inProcessCli as cli, inProcessHome as home } from "./in-process.js";

describe("a hostile image manifest", () => {
  it.each(["../victim", "a/../../victim", "/tmp", "..", ""])(
    "with the name %j is refused before anything touches the file system",
    async (name) => {
      const env = home();
      const homeDir = env.STACK_EMULATOR_HOME as string;
      const victim = join(homeDir, "victim");
      mkdirSync(victim);
      writeFileSync(join(victim, "keep"), "data");
      const image = join(homeDir, "image");
      mkdirSync(image);
      writeFileSync(join(image, "disk.qcow2"), "");
      writeFileSync(
        join(image, "image.json"),
        JSON.stringify({
          schema: 2,
          name,
          arch: "amd64",
          digest: "sha256:00",
          boot: { firmware: "bios" },
          disk: "disk.qcow2",
          memoryMiB: 256,
          cpus: 1,
        }),
      );
      for (const command of ["start", "capture"]) {
        const result = await cli([command, "--image", image, "--json"], env);
        expect(result.code, result.stderr).toBe(1);
        expect(result.json.error.code).toBe("INVALID_IMAGE");
        expect(result.json.error.message).toContain('"name"');
      }
      expect(readFileSync(join(victim, "keep"), "utf8")).toBe("data");
      expect(existsSync(join(homeDir, "snapshots"))).toBe(false);
    },
  );
});
