import path from "node:path";
import { describe, expect, it } from "vitest";
import { type DoctorReport, doctor } from "../src/index.js";
import { put, REAL_QEMU, script, tempRoot } from "./helpers.js";

function byId(report: DoctorReport, id: string) {
  const found = report.checks.find((c) => c.id === id);
  expect(found, `check ${id}`).toBeDefined();
  return found!;
}

describe("doctor", () => {
  it("passes on this machine: QEMU 7.2 with x-ignore-shared, OVMF, and a reason for tcg", async () => {
    const report = await doctor({ arch: "amd64" });
    expect(report.ok).toBe(true);
    expect(byId(report, "qemu").detail).toContain(REAL_QEMU);
    expect(byId(report, "qemu-img").status).toBe("ok");
    expect(byId(report, "qemu-version").detail).toMatch(/^QEMU 7\.2\./);
    expect(byId(report, "snapshot")).toMatchObject({ status: "ok" });
    expect(byId(report, "firmware").detail).toContain("/usr/share/OVMF/OVMF_CODE_4M.fd");
    const accel = byId(report, "accelerator");
    expect(accel.detail).toMatch(/^(kvm|tcg)/);
    expect(accel.detail).not.toMatch(/hvf|whpx/); // other platforms' accelerators are left out
    if (accel.status === "warn") expect(accel.fix).toBeTruthy();
  });

  it.runIf(process.arch === "x64")(
    "tells the cost of arm64 guests on this amd64 host honestly: translated, slower than native tcg",
    async () => {
      const report = await doctor({ arch: "arm64" });
      expect(byId(report, "qemu").detail).toContain("qemu-system-aarch64");
      const accel = byId(report, "accelerator");
      expect(accel.status).toBe("warn");
      expect(accel.detail).toMatch(/^tcg;/);
      expect(accel.detail).toContain(
        "An arm64 guest on an amd64 host is translated instruction by instruction",
      );
      expect(accel.fix).toMatch(/image built for this host's architecture/);
    },
  );

  it("fails without QEMU and gives the distribution's install command", async () => {
    for (const [id, command] of [
      ["debian", "apt-get install -y qemu-system-x86 qemu-utils"],
      ["fedora", "dnf install -y qemu-system-x86-core qemu-img"],
      ["arch", "pacman -S --needed qemu-system-x86 qemu-img"],
    ] as const) {
      const root = await tempRoot();
      await put(root, "etc/os-release", `ID=${id}\n`);
      const report = await doctor({ arch: "amd64", root, env: { PATH: "/usr/bin" }, os: "linux", uid: 1000 });
      expect(report.ok).toBe(false);
      const qemu = byId(report, "qemu");
      expect(qemu.status).toBe("fail");
      expect(qemu.fix).toBe(`sudo ${command}`);
      expect(report.checks.find((c) => c.id === "qemu-version")).toBeUndefined();
    }
  });

  it("asks for Homebrew on macOS, and warns (not fails) an arm64 host without UEFI firmware", async () => {
    const root = await tempRoot();
    const report = await doctor({ root, env: { PATH: "" }, os: "darwin", hostArch: "arm64" });
    expect(byId(report, "host")).toMatchObject({
      status: "ok",
      detail: expect.stringContaining("darwin/arm64"),
    });
    expect(byId(report, "qemu")).toMatchObject({ status: "fail", fix: "brew install qemu" });
    // The arm64 dev image boots its kernel directly; only UEFI images (arm64 releases) need the firmware.
    expect(byId(report, "firmware")).toMatchObject({
      status: "warn",
      detail: expect.stringContaining("arm64 release images do"),
      fix: "brew install qemu",
    });
    expect(report.ok).toBe(false); // QEMU itself is missing
  });

  it("reports a QEMU that prints garbage for its version as a failed check, not an exception", async () => {
    const root = await tempRoot();
    await put(root, "bin/qemu", script("echo garbage"), 0o755);
    const report = await doctor({
      arch: "amd64",
      root,
      env: { PATH: "", EMULATOR_QEMU_AMD64: "/bin/qemu" },
      os: "linux",
    });
    expect(report.ok).toBe(false);
    expect(byId(report, "qemu").status).toBe("ok");
    expect(byId(report, "qemu-img").status).toBe("fail");
    expect(byId(report, "qemu-version")).toMatchObject({
      status: "fail",
      detail: expect.stringContaining("garbage"),
    });
  });

  it("fails an invalid EMULATOR_ACCEL and warns about malformed firmware descriptors", async () => {
    const root = await tempRoot();
    await put(root, "bin/qemu-system-x86_64", script(`exec ${REAL_QEMU} "$@"`), 0o755);
    await put(root, "bin/qemu-img", script("exit 0"), 0o755);
    await put(root, "usr/share/OVMF/OVMF_CODE.fd", "image");
    await put(root, "usr/share/qemu/firmware/10-broken.json", "{");
    const report = await doctor({
      arch: "amd64",
      root,
      env: { PATH: "/bin", EMULATOR_ACCEL: "warp" },
      os: "linux",
    });
    expect(report.ok).toBe(false);
    expect(byId(report, "accelerator")).toMatchObject({
      status: "fail",
      detail: expect.stringContaining("EMULATOR_ACCEL=warp"),
    });
    const firmware = byId(report, "firmware");
    expect(firmware.status).toBe("warn");
    expect(firmware.detail).toContain(path.join(root, "usr/share/OVMF/OVMF_CODE.fd"));
    expect(firmware.detail).toContain("10-broken.json");
  });

  it("shows an accelerator the caller ruled out, with its reason", async () => {
    const report = await doctor({
      arch: "amd64",
      excludeAccelerators: [{ accel: "kvm", reason: "a kvm boot made no progress on this host" }],
    });
    expect(report.ok).toBe(true);
    expect(byId(report, "accelerator")).toMatchObject({
      status: "warn",
      detail: expect.stringContaining("kvm: a kvm boot made no progress on this host"),
    });
  });

  it("fails an unsupported host platform", async () => {
    const report = await doctor({
      arch: "amd64",
      os: "sunos",
      hostArch: "sparc",
      env: { PATH: "" },
      root: await tempRoot(),
    });
    expect(report.ok).toBe(false);
    expect(byId(report, "host").status).toBe("fail");
  });
});
