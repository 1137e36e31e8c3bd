import { execFileSync } from "node:child_process";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { normalizeArch } from "../src/host.js";
import { findQemu, HostDetectError, hostInfo } from "../src/index.js";
import { put, REAL_QEMU, script, tempRoot } from "./helpers.js";

const EXE = script("exit 0");

async function codeOf(promise: Promise<unknown>): Promise<string | undefined> {
  return promise.then(
    () => undefined,
    (e: unknown) => (e instanceof HostDetectError ? e.code : `not typed: ${String(e)}`),
  );
}

describe("findQemu", () => {
  it("finds the real QEMU 7.2 and qemu-img on this machine's PATH", async () => {
    const found = await findQemu("amd64");
    expect(found.system).toBe(REAL_QEMU);
    expect(found.img).toBe("/usr/bin/qemu-img");
    expect(found.source).toBe("path");
  });

  it("searches PATH first and takes the qemu-img next to the emulator", async () => {
    const root = await tempRoot();
    await put(root, "opt/q/bin/qemu-system-aarch64", EXE, 0o755);
    await put(root, "opt/q/bin/qemu-img", EXE, 0o755);
    await put(root, "usr/bin/qemu-system-aarch64", EXE, 0o755);
    await put(root, "usr/bin/qemu-img", EXE, 0o755);
    const found = await findQemu("arm64", { root, env: { PATH: "/nowhere:/opt/q/bin" }, os: "linux" });
    expect(found).toEqual({
      system: path.join(root, "opt/q/bin/qemu-system-aarch64"),
      img: path.join(root, "opt/q/bin/qemu-img"),
      source: "path",
    });
  });

  it("falls back to well-known locations (Homebrew on macOS) and skips non-executable files", async () => {
    const root = await tempRoot();
    await put(root, "opt/homebrew/bin/qemu-system-aarch64", EXE, 0o644);
    await put(root, "usr/local/bin/qemu-system-aarch64", EXE, 0o755);
    const found = await findQemu("arm64", { root, env: { PATH: "/bin" }, os: "darwin" });
    expect(found.system).toBe(path.join(root, "usr/local/bin/qemu-system-aarch64"));
    expect(found.source).toBe("well-known");
    expect(found.img).toBeUndefined();
  });

  it("uses the per-architecture override, and rejects a broken one instead of ignoring it", async () => {
    const root = await tempRoot();
    await put(root, "custom/qemu", EXE, 0o755);
    await put(root, "usr/bin/qemu-system-x86_64", EXE, 0o755);
    const found = await findQemu("amd64", {
      root,
      env: { PATH: "/usr/bin", EMULATOR_QEMU_AMD64: "/custom/qemu" },
    });
    expect(found.system).toBe(path.join(root, "custom/qemu"));
    expect(found.source).toBe("env");
    expect(
      await codeOf(findQemu("amd64", { root, env: { PATH: "/usr/bin", EMULATOR_QEMU_AMD64: "/missing" } })),
    ).toBe("QEMU_OVERRIDE_INVALID");
    expect(
      await codeOf(findQemu("amd64", { root, env: { PATH: "/usr/bin", EMULATOR_QEMU_IMG: "/missing" } })),
    ).toBe("QEMU_OVERRIDE_INVALID");
  });

  it("reports a PATH without QEMU as QEMU_NOT_FOUND with the install command for the distribution", async () => {
    const root = await tempRoot();
    await put(root, "etc/os-release", 'NAME="Fedora Linux"\nID=fedora\n');
    await put(root, "usr/bin/sh", EXE, 0o755);
    const error = await findQemu("amd64", { root, env: { PATH: "/usr/bin" }, os: "linux" }).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(HostDetectError);
    expect((error as HostDetectError).code).toBe("QEMU_NOT_FOUND");
    expect((error as Error).message).toContain("dnf install -y qemu-system-x86-core qemu-img");
    expect((error as Error).message).toContain("EMULATOR_QEMU_AMD64");
  });

  it("finds RHEL's /usr/libexec/qemu-kvm for the host's own architecture only", async () => {
    const root = await tempRoot();
    await put(root, "usr/libexec/qemu-kvm", EXE, 0o755);
    const native = hostInfo().nativeGuestArchs[0]!;
    const foreign = native === "amd64" ? "arm64" : "amd64";
    const found = await findQemu(native, { root, env: { PATH: "" }, os: "linux" });
    expect(found.system).toBe(path.join(root, "usr/libexec/qemu-kvm"));
    expect(await codeOf(findQemu(foreign, { root, env: { PATH: "" }, os: "linux" }))).toBe("QEMU_NOT_FOUND");
  });

  it("rejects an unknown architecture with UNSUPPORTED_ARCH and accepts QEMU's own names", async () => {
    expect(await codeOf(findQemu("riscv64"))).toBe("UNSUPPORTED_ARCH");
    expect((await findQemu("x86_64")).system).toBe(REAL_QEMU);
  });
});

describe("hostInfo", () => {
  it("normalises names and knows which guests run natively", () => {
    expect(hostInfo({ platform: "linux", arch: "x64" })).toEqual({
      os: "linux",
      arch: "amd64",
      nativeGuestArchs: ["amd64"],
    });
    expect(hostInfo({ platform: "darwin", arch: "arm64" }).nativeGuestArchs).toEqual(["arm64"]);
    expect(hostInfo({ platform: "win32", arch: "x64" }).os).toBe("windows");
    expect(hostInfo({ platform: "aix", arch: "riscv64" })).toEqual({
      os: "unknown",
      arch: "riscv64",
      nativeGuestArchs: [],
    });
  });

  it("describes this machine as uname does", () => {
    const machine = execFileSync("uname", ["-m"], { encoding: "utf8" }).trim();
    const info = hostInfo();
    expect(info.arch).toBe(normalizeArch(machine));
    expect(info.os).toBe(execFileSync("uname", ["-s"], { encoding: "utf8" }).trim().toLowerCase());
  });
});
