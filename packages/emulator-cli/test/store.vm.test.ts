// Snapshots are immutable once captured: a recapture writes a new generation beside the old one, and nothing an
// instance is built on is removed while it is.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { devImageFixture, type Instance, runCli } from "./helpers.js";
import { getValue, putValue } from "./interrupt.js";

const TIMEOUT = 600_000;
const dev = devImageFixture();

const generations = (inst: Instance) =>
  readdirSync(join(inst.home, "snapshots", dev.imageName)).filter((name) => name.startsWith("g-"));
const currentGeneration = (inst: Instance) =>
  readFileSync(join(inst.home, "snapshots", dev.imageName, "current"), "utf8").trim();

/** A second instance of the same home, on ports of its own. */
async function sibling(inst: Instance, name: string): Promise<NodeJS.ProcessEnv> {
  const other = await dev.instance();
  return { ...other.env, STACK_EMULATOR_HOME: inst.home, STACK_EMULATOR_INSTANCE: name };
}

async function startedWithValue(inst: Instance) {
  const started = await runCli(["start", "--json"], inst.env);
  expect(started.code, started.stderr).toBe(0);
  await putValue(inst, "kept", "on a disk built on the first snapshot");
  const stopped = await runCli(["stop", "--json"], inst.env);
  expect(stopped.json.saved, stopped.stderr).toBe(true);
}

describe("snapshots stay while an instance is built on them", () => {
  it(
    "a recapture writes a new generation; the stopped instance on the old one still resumes with its data; the old one goes with it",
    async () => {
      const inst = await dev.instance();
      await startedWithValue(inst);
      const [first] = generations(inst);
      expect(currentGeneration(inst)).toBe(first);

      const capture = await runCli(["capture", "--json"], await sibling(inst, "other"));
      expect(capture.code, capture.stderr).toBe(0);
      const second = currentGeneration(inst);
      expect(second).not.toBe(first);
      expect(generations(inst).sort()).toEqual([first, second].sort());

      const resumed = await runCli(["start", "--json"], inst.env);
      expect(resumed.code, resumed.stderr).toBe(0);
      expect(resumed.json.boot).toBe("quick-boot");
      expect(await getValue(inst, "kept")).toBe("on a disk built on the first snapshot");

      expect((await runCli(["reset"], inst.env)).code).toBe(0);
      expect(generations(inst)).toEqual([second]);
    },
    TIMEOUT,
  );

  it(
    "reset --images keeps and lists what another instance uses; --force deletes that instance too",
    async () => {
      const inst = await dev.instance();
      await startedWithValue(inst);
      const ghost = await sibling(inst, "ghost");

      const kept = await runCli(["reset", "--images", "--json"], ghost);
      expect(kept.code, kept.stderr).toBe(0);
      expect(kept.json).toMatchObject({ existed: false, images: true });
      expect(kept.json.kept).toEqual([
        { path: join(inst.home, "snapshots", dev.imageName, currentGeneration(inst)), usedBy: ["default"] },
      ]);
      const resumed = await runCli(["start", "--json"], inst.env);
      expect(resumed.code, resumed.stderr).toBe(0);
      expect(await getValue(inst, "kept")).toBe("on a disk built on the first snapshot");

      const forced = await runCli(["reset", "--images", "--force", "--json"], ghost);
      expect(forced.code, forced.stderr).toBe(0);
      expect(forced.json).toMatchObject({ alsoReset: ["default"], kept: [] });
      expect(forced.stderr).toMatch(/deleting instance default/);
      expect(existsSync(join(inst.home, "instances", "default"))).toBe(false);
      expect(existsSync(join(inst.home, "snapshots", dev.imageName))).toBe(false);
    },
    TIMEOUT,
  );
});
