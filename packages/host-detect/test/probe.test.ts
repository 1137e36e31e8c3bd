import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { readdir, readFile, stat, utimes, writeFile } from "node:fs/promises";
import path from "node:path";
import { QmpClient } from "@stack/qmp";
import { beforeEach, describe, expect, it } from "vitest";
import { HostDetectError, parseQemuVersion, probeQemu, qemuVersion } from "../src/index.js";
import { clearProbeCache, hasFileMigration } from "../src/probe.js";
import { put, REAL_QEMU, script, tempRoot } from "./helpers.js";

beforeEach(() => clearProbeCache());

describe("probeQemu against the real QEMU 7.2", () => {
  it("reports version 7.2, x-ignore-shared without mapped-ram, tcg, no file: migration, memory-backend-file", async () => {
    const abilities = await probeQemu(REAL_QEMU);
    expect(abilities.version).toMatchObject({ major: 7, minor: 2 });
    expect(abilities.version.text).toMatch(/^7\.2\.\d+/);
    expect(abilities.accelerators).toContain("tcg");
    expect(abilities.accelerators).not.toContain("qtest");
    expect(abilities.migrationCapabilities).toContain("x-ignore-shared");
    expect(abilities.migrationCapabilities).toContain("multifd");
    expect(abilities.migrationCapabilities).not.toContain("mapped-ram");
    expect(abilities.fileMigration).toBe(false);
    expect(abilities.memoryBackendFile).toBe(true);
  });

  it("returns the cached result for the same binary", async () => {
    const first = await probeQemu(REAL_QEMU);
    expect(await probeQemu(REAL_QEMU)).toBe(first);
  });
});

/** A wrapper around the real QEMU that counts its runs: the count shows whether a probe happened. */
async function countingQemu(): Promise<{ root: string; wrapper: string; runs: () => Promise<number> }> {
  const root = await tempRoot();
  const counter = path.join(root, "runs");
  await writeFile(counter, "");
  const wrapper = await put(
    root,
    "bin/qemu",
    script(`echo run >> ${counter}\nexec ${REAL_QEMU} "$@"`),
    0o755,
  );
  const runs = async () => (await readFile(counter, "utf8")).split("\n").filter(Boolean).length;
  return { root, wrapper, runs };
}

describe("probe cache", () => {
  it("probes again when the binary's mtime changes, and reuses the disk cache across processes", async () => {
    const { root, wrapper, runs } = await countingQemu();
    const cacheDir = path.join(root, "cache");

    const first = await probeQemu(wrapper, { cacheDir });
    const afterFirst = await runs();
    expect(afterFirst).toBeGreaterThan(0);
    expect(await readdir(cacheDir)).toHaveLength(1);

    clearProbeCache(); // a new process: only the disk cache remains
    expect(await probeQemu(wrapper, { cacheDir })).toEqual(first);
    expect(await runs()).toBe(afterFirst);

    const { mtime } = await stat(wrapper);
    await utimes(wrapper, mtime, new Date(mtime.getTime() + 5_000));
    expect(await probeQemu(wrapper, { cacheDir })).toEqual(first);
    expect(await runs()).toBe(afterFirst * 2);
  });

  it("runs one probe for concurrent callers", async () => {
    const { wrapper, runs } = await countingQemu();
    const [a, b] = await Promise.all([probeQemu(wrapper), probeQemu(wrapper)]);
    expect(b).toBe(a);
    // One -version run plus one QMP run.
    expect(await runs()).toBe(2);
  });

  it("ignores a disk cache entry written for another mtime", async () => {
    const root = await tempRoot();
    const wrapper = await put(root, "bin/qemu", script(`exec ${REAL_QEMU} "$@"`), 0o755);
    const cacheDir = path.join(root, "cache");
    await probeQemu(wrapper, { cacheDir });
    const [name] = await readdir(cacheDir);
    const file = path.join(cacheDir, name!);
    const entry = JSON.parse(await readFile(file, "utf8"));
    entry.abilities.version.text = "planted";
    entry.identity.mtimeMs -= 1;
    await writeFile(file, JSON.stringify(entry));
    clearProbeCache();
    expect((await probeQemu(wrapper, { cacheDir })).version.text).not.toBe("planted");
  });
});

async function expectCode(promise: Promise<unknown>, code: string): Promise<HostDetectError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(HostDetectError);
  expect((error as HostDetectError).code).toBe(code);
  return error as HostDetectError;
}

function isGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return true;
  }
  // Killed but not yet reaped by init counts as gone.
  return /\) Z /.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
}

describe("broken QEMU binaries give typed results", () => {
  it("garbage -version output is BAD_VERSION", async () => {
    const root = await tempRoot();
    const fake = await put(root, "qemu", script('echo "hello, I am not QEMU"'), 0o755);
    const error = await expectCode(probeQemu(fake), "BAD_VERSION");
    expect(error.message).toContain("hello, I am not QEMU");
    await expectCode(qemuVersion(fake), "BAD_VERSION");
  });

  it("a -version that hangs is killed at the deadline with its children: PROBE_TIMEOUT", async () => {
    const root = await tempRoot();
    const pidFile = path.join(root, "child.pid");
    const fake = await put(root, "qemu", script(`sleep 1000 &\necho $! > ${pidFile}\nwait`), 0o755);
    const error = await expectCode(probeQemu(fake, { timeoutMs: 5_000 }), "PROBE_TIMEOUT");
    expect(error.path).toBe(fake);
    const pid = Number(await readFile(pidFile, "utf8"));
    expect(isGone(pid)).toBe(true);
  });

  it("a QEMU that hangs during the QMP probe is PROBE_TIMEOUT", async () => {
    const root = await tempRoot();
    const fake = await put(
      root,
      "qemu",
      script(
        'if [ "$1" = "-version" ]; then echo "QEMU emulator version 7.2.0"; exit 0; fi\nexec sleep 1000',
      ),
      0o755,
    );
    await expectCode(probeQemu(fake, { timeoutMs: 2_000 }), "PROBE_TIMEOUT");
  });

  it("a QEMU that exits during the probe is QEMU_NOT_RUNNABLE with its error output", async () => {
    const root = await tempRoot();
    const fake = await put(
      root,
      "qemu",
      script(
        'if [ "$1" = "-version" ]; then echo "QEMU emulator version 9.1.0"; exit 0; fi\necho "could not load PC BIOS" >&2\nexit 1',
      ),
      0o755,
    );
    const error = await expectCode(probeQemu(fake), "QEMU_NOT_RUNNABLE");
    expect(error.message).toContain("could not load PC BIOS");
  });

  it("a missing binary is QEMU_NOT_FOUND and a non-executable one QEMU_NOT_RUNNABLE", async () => {
    const root = await tempRoot();
    await expectCode(probeQemu(path.join(root, "nope")), "QEMU_NOT_FOUND");
    const plain = await put(root, "qemu", script("echo QEMU emulator version 7.2.0"), 0o644);
    await expectCode(probeQemu(plain), "QEMU_NOT_RUNNABLE");
  });

  it("failures are not cached: a fixed binary is probed again", async () => {
    const root = await tempRoot();
    const fake = await put(root, "qemu", script("echo garbage"), 0o755);
    await expectCode(probeQemu(fake), "BAD_VERSION");
    await put(root, "qemu", script(`exec ${REAL_QEMU} "$@"`), 0o755);
    expect((await probeQemu(fake)).version.major).toBe(7);
  });
});

describe("parseQemuVersion", () => {
  it("reads distribution and upstream version lines", () => {
    expect(
      parseQemuVersion("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright"),
    ).toEqual({
      major: 7,
      minor: 2,
      micro: 22,
      text: "7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)",
    });
    expect(parseQemuVersion("QEMU emulator version 10.1.0\n")).toMatchObject({
      major: 10,
      minor: 1,
      micro: 0,
    });
    expect(parseQemuVersion("QEMU PC emulator version 2.5\n")).toMatchObject({
      major: 2,
      minor: 5,
      micro: 0,
    });
  });

  it("rejects anything else", () => {
    expect(parseQemuVersion("")).toBeUndefined();
    expect(parseQemuVersion("version 7.2.0")).toBeUndefined();
    expect(parseQemuVersion("QEMU emulator version seven")).toBeUndefined();
  });
});

describe("file: migration detection from the QMP schema", () => {
  it("finds no MigrationAddressType in 7.2's real schema, and recognises the 8.2 enum by its values", async () => {
    const root = await tempRoot();
    const socket = path.join(root, "qmp.sock");
    const qemu = spawn(REAL_QEMU, [
      "-machine",
      "none",
      "-nodefaults",
      "-display",
      "none",
      "-qmp",
      `unix:${socket},server=on,wait=off`,
    ]);
    try {
      const client = await QmpClient.connect(socket, { timeoutMs: 30_000 });
      const schema = await client.execute<Parameters<typeof hasFileMigration>[0]>("query-qmp-schema");
      await client.close();
      const v72 = { major: 7, minor: 2, micro: 0, text: "7.2.0" };
      expect(schema!.length).toBeGreaterThan(100);
      expect(hasFileMigration(schema, v72)).toBe(false);
      const v82 = { major: 8, minor: 2, micro: 0, text: "8.2.0" };
      const withFile = [
        ...schema!,
        { name: "321", "meta-type": "enum", values: ["socket", "exec", "rdma", "file"] },
      ];
      expect(hasFileMigration(withFile, v82)).toBe(true);
      const membersOnly = [
        ...schema!,
        { "meta-type": "enum", members: [{ name: "socket" }, { name: "exec" }, { name: "file" }] },
      ];
      expect(hasFileMigration(membersOnly, v82)).toBe(true);
      expect(hasFileMigration(undefined, v82)).toBe(true);
      expect(hasFileMigration(undefined, v72)).toBe(false);
    } finally {
      qemu.kill("SIGKILL");
    }
  });
});
