import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { describeError, EmulatorError, ERROR_CODES, LIBRARY_ERROR_CODES } from "../src/core/errors.js";
import { packageFile } from "../src/core/package-files.js";
import { inProcessCli as cli, inProcessHome as home } from "./in-process.js";

describe("the CLI in-process", () => {
  it("reports a stopped instance with exit status 3 and its JSON", async () => {
    const result = await cli(["status", "--json"], home());
    expect(result.code).toBe(3);
    expect(result.json).toMatchObject({ instance: "default", state: "stopped", services: [] });
  });

  it("takes the instance from the flag over STACK_EMULATOR_INSTANCE", async () => {
    const env = { ...home(), STACK_EMULATOR_INSTANCE: "from-env" };
    expect((await cli(["status", "--json"], env)).json.instance).toBe("from-env");
    expect((await cli(["--instance", "from-flag", "status", "--json"], env)).json.instance).toBe("from-flag");
  });

  it("reports bad settings with their documented codes and a hint, as JSON too", async () => {
    const badName = await cli(["status", "--json", "--instance", "../../etc"], home());
    expect(badName.code).toBe(1);
    expect(badName.json.error).toMatchObject({
      code: "INVALID_NAME",
      hint: expect.stringMatching(/lowercase/),
    });
    const badPrefix = await cli(["status", "--json"], { ...home(), PORT_PREFIX: "999" });
    expect(badPrefix.json.error.code).toBe("INVALID_PORT");
    expect(badPrefix.stderr).toContain("PORT_PREFIX=");
    const badPorts = await cli(["start", "--ports", "sometimes", "--json"], home());
    expect(badPorts.json.error.code).toBe("INVALID_ARGUMENT");
  });

  it("prints its version and help without exiting the process", async () => {
    const version = await cli(["--version"], home());
    expect(version.code).toBe(0);
    expect(version.stdout).toMatch(/^\d+\.\d+\.\d+\n$/);
    const help = await cli(["--help"], home());
    expect(help.code).toBe(0);
    expect(help.stdout).toContain("Usage: stack-emulator");
  });
});

describe("errors as the CLI reports them", () => {
  it("passes documented codes through and turns anything else into INTERNAL with its cause", () => {
    expect(describeError(new EmulatorError("NOT_RUNNING", "x", "y"))).toEqual({
      code: "NOT_RUNNING",
      message: "x",
      hint: "y",
    });
    const enoent = Object.assign(new Error("ENOENT: no such file"), { code: "ENOENT" });
    expect(describeError(enoent)).toEqual({
      code: "INTERNAL",
      message: "Error ENOENT: ENOENT: no such file",
    });
    const full = Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC" });
    expect(describeError(full)).toMatchObject({
      code: "NO_SPACE",
      hint: expect.stringMatching(/free space/),
    });
    const timeout = Object.assign(new Error("no answer"), { name: "QgaError", code: "TIMEOUT" });
    expect(describeError(timeout).code).toBe("INTERNAL");
    const download = Object.assign(new Error("digest differs"), {
      name: "ArtifactsError",
      code: "CHECKSUM_MISMATCH",
    });
    expect(describeError(download).code).toBe("CHECKSUM_MISMATCH");
    const other = Object.assign(new Error("odd"), { name: "ArtifactsError", code: "IO" });
    expect(describeError(other).code).toBe("DOWNLOAD_FAILED");
    const accel = Object.assign(new Error("EMULATOR_ACCEL=kvm cannot run"), {
      name: "HostDetectError",
      code: "ACCEL_UNUSABLE",
    });
    expect(describeError(accel)).toEqual({
      code: "ACCEL_UNUSABLE",
      message: "EMULATOR_ACCEL=kvm cannot run",
    });
    const probe = Object.assign(new Error("probe"), { name: "HostDetectError", code: "PROBE_TIMEOUT" });
    expect(describeError(probe).code).toBe("HOST_CHECK_FAILED");
  });

  it("documents every code a script can see in the README", () => {
    const readme = readFileSync(packageFile("README.md"), "utf8");
    const section = readme.slice(
      readme.indexOf("## Errors"),
      readme.indexOf("\n## ", readme.indexOf("## Errors") + 1),
    );
    // The table's rows, without their asides in parentheses.
    const rows = section
      .split("\n")
      .filter((line) => line.startsWith("|"))
      .join("\n")
      .replace(/\([^)]*\)/g, "");
    const documented = new Set(rows.match(/`[A-Z_]+`/g)?.map((code) => code.slice(1, -1)));
    const reported = [
      ...ERROR_CODES,
      ...Object.values(LIBRARY_ERROR_CODES).flatMap((library) => [...library.codes, library.otherwise]),
    ];
    expect(reported.filter((code) => !documented.has(code))).toEqual([]);
    expect([...documented].filter((code) => !reported.includes(code as never))).toEqual([]);
  });
});
