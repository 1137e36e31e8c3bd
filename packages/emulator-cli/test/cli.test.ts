import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { instanceFiles, removeTempHomes, runCli, tempHome } from "./helpers.js";

afterAll(removeTempHomes);

describe("the stack-emulator command", () => {
  it("lists every command with examples in its help", async () => {
    const result = await runCli(["--help"], process.env);
    expect(result.code).toBe(0);
    for (const command of [
      "start",
      "stop",
      "status",
      "reset",
      "logs",
      "doctor",
      "pull",
      "capture",
      "list-releases",
    ]) {
      expect(result.stdout).toMatch(new RegExp(`^  ${command}\\b`, "m"));
    }
    expect(result.stdout).toContain("STACK_EMULATOR_HOME");
  });

  it("prints start's help through pnpm, as the README says", () => {
    const root = resolve(import.meta.dirname, "..", "..", "..");
    const out = execFileSync("pnpm", ["--silent", "--filter", "emulator-cli", "start", "--", "--help"], {
      cwd: root,
      encoding: "utf8",
    });
    expect(out).toContain("Usage: stack-emulator start");
    expect(out).toContain("--image <selector>");
    expect(out).toContain("Other commands: stop, status, reset");
  });

  it("reports a stopped instance and a no-op stop without creating state", async () => {
    const home = tempHome();
    const env = { ...process.env, STACK_EMULATOR_HOME: home };
    const status = await runCli(["status", "--json"], env);
    // As LSB init scripts report a stopped service.
    expect(status.code).toBe(3);
    expect(status.json).toMatchObject({ instance: "default", state: "stopped", services: [] });
    const stop = await runCli(["stop", "--json"], env);
    expect(stop.code).toBe(0);
    expect(stop.json).toEqual({ wasRunning: false, saved: false });
    expect(existsSync(instanceFiles(home).state)).toBe(false);
  });

  it("rejects an invalid instance name with a hint", async () => {
    const result = await runCli(["status", "--json", "--instance", "../../etc"], {
      ...process.env,
      STACK_EMULATOR_HOME: tempHome(),
    });
    expect(result.code).toBe(1);
    expect(result.json.error.code).toBe("INVALID_NAME");
    expect(result.json.error.hint).toMatch(/lowercase letters/);
  });

  it("doctor reports the host's QEMU as data", async () => {
    const result = await runCli(["doctor", "--json"], { ...process.env, STACK_EMULATOR_HOME: tempHome() });
    expect(result.json.checks.length).toBeGreaterThan(0);
    expect(result.json.checks.some((c: { status: string; detail: string }) => /7\.2/.test(c.detail))).toBe(
      true,
    );
    expect(result.code).toBe(result.json.ok ? 0 : 1);
  });
});
