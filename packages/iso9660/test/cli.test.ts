import { execFile } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { writeIsoFromDirectory } from "../src/index.js";
import { inspectBuffer, plainView, rockRidgeView } from "./helpers/parse.js";
import { run } from "./helpers/trees.js";

const work = mkdtempSync(join(tmpdir(), "iso9660-cli-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));
const cli = join(import.meta.dirname, "../src/cli.ts");
const env = { ...process.env, SOURCE_DATE_EPOCH: "1600000000" };

/** Runs stack-mkiso from source; resolves with the exit code and output instead of throwing. */
function mkiso(args: string[]): Promise<{ code: number; stdout: Buffer; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ["--import", "tsx", cli, ...args],
      { env, cwd: import.meta.dirname, encoding: "buffer", maxBuffer: 64 << 20 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === "number" ? error.code : 1) : 0;
        resolve({ code, stdout, stderr: stderr.toString() });
      },
    );
  });
}

const src = join(work, "seed");
mkdirSync(join(src, "scripts"), { recursive: true });
writeFileSync(join(src, "user-data"), "#cloud-config\n");
writeFileSync(join(src, "meta-data"), "instance-id: cli\n");
writeFileSync(join(src, "scripts", "Setup Script.sh"), "#!/bin/sh\n", { mode: 0o755 });

describe("stack-mkiso", () => {
  it("writes the same image as the library for the same options, to a file and to standard output", async () => {
    const file = join(work, "cli.iso");
    const result = await mkiso(["-o", file, "-V", "cidata", "-J", "-R", src]);
    expect(result).toMatchObject({ code: 0, stderr: "" });
    const viaStdout = await mkiso(["-output", "-", "-volid", "cidata", "-joliet", "-rock", src]);
    expect(viaStdout.code).toBe(0);
    const library = join(work, "lib.iso");
    await writeIsoFromDirectory(src, library, { volumeId: "cidata", date: new Date(1600000000 * 1000) });
    expect(readFileSync(file).equals(readFileSync(library))).toBe(true);
    expect(viaStdout.stdout.equals(readFileSync(library))).toBe(true);
    const { stdout } = await run("blkid", ["-p", "-o", "export", file]);
    expect(stdout).toMatch(/^LABEL=cidata$/m);
  });

  it("adds Joliet and Rock Ridge only when asked, as genisoimage does", async () => {
    const plain = join(work, "plain.iso");
    expect((await mkiso(["-o", plain, "-iso-level", "1", src])).code).toBe(0);
    const parsed = inspectBuffer(readFileSync(plain));
    expect(parsed.rr).toBe(false);
    expect(parsed.svd).toBeNull();
    expect([...plainView(parsed.iso).keys()].sort()).toEqual([
      "META_DAT.",
      "SCRIPTS",
      "SCRIPTS/SETUP_SC.SH",
      "USER_DAT.",
    ]);
  });

  it("takes files as operands and puts them at the root, like genisoimage", async () => {
    const out = join(work, "operands.iso");
    const r = await mkiso([
      "-o",
      out,
      "-V",
      "cidata",
      "-J",
      "-R",
      join(src, "user-data"),
      join(src, "meta-data"),
    ]);
    expect(r.code).toBe(0);
    const view = rockRidgeView(inspectBuffer(readFileSync(out)).iso);
    expect([...view.keys()].sort()).toEqual(["meta-data", "user-data"]);
    // genisoimage given the same operands lists the same names.
    const theirs = join(work, "genisoimage.iso");
    await run("genisoimage", [
      "-quiet",
      "-o",
      theirs,
      "-V",
      "cidata",
      "-J",
      "-R",
      join(src, "user-data"),
      join(src, "meta-data"),
    ]);
    const ours = (await run("isoinfo", ["-f", "-R", "-i", out])).stdout;
    const reference = (await run("isoinfo", ["-f", "-R", "-i", theirs])).stdout;
    expect(ours.split("\n").sort()).toEqual(reference.split("\n").sort());
  });

  it("exits 2 with usage on bad arguments and 1 with the error code on bad input", async () => {
    const usage = await mkiso(["-o"]);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain("Usage: stack-mkiso");
    expect((await mkiso(["-o", join(work, "x.iso"), "-frobnicate", src])).code).toBe(2);
    expect((await mkiso(["-o", join(work, "x.iso")])).code).toBe(2);
    const missing = await mkiso(["-o", join(work, "x.iso"), join(work, "missing")]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain("[SOURCE_NOT_FOUND]");
    const label = await mkiso(["-o", join(work, "x.iso"), "-V", "x".repeat(40), src]);
    expect(label.code).toBe(1);
    expect(label.stderr).toContain("[INVALID_VOLUME_ID]");
    const help = await mkiso(["--help"]);
    expect(help.code).toBe(0);
    expect(help.stdout.toString()).toContain("-iso-level");
  });
});
