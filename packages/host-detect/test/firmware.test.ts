import path from "node:path";
import { describe, expect, it } from "vitest";
import { findFirmware, HostDetectError, listFirmware } from "../src/index.js";
import { put, tempRoot } from "./helpers.js";

interface DescriptorSpec {
  arch?: string;
  machines?: string[];
  code: string;
  vars?: string;
  features?: string[];
  interfaces?: string[];
  format?: string;
}

function descriptor(d: DescriptorSpec): string {
  return JSON.stringify({
    description: "test firmware",
    "interface-types": d.interfaces ?? ["uefi"],
    mapping: {
      device: "flash",
      executable: { filename: d.code, format: d.format ?? "raw" },
      ...(d.vars === undefined ? {} : { "nvram-template": { filename: d.vars, format: d.format ?? "raw" } }),
    },
    targets: [{ architecture: d.arch ?? "aarch64", machines: d.machines ?? ["virt-*"] }],
    features: d.features ?? ["verbose-static"],
    tags: [],
  });
}

const SHARE = "usr/share/qemu/firmware";

/** A root with the aarch64 images a descriptor can point at. */
async function rootWithImages(): Promise<string> {
  const root = await tempRoot();
  for (const f of ["AAVMF_CODE.fd", "AAVMF_VARS.fd", "AAVMF_CODE.ms.fd", "other_CODE.fd"]) {
    await put(root, `usr/share/AAVMF/${f}`, "image");
  }
  return root;
}

async function find(root: string, arch: string, opts: Parameters<typeof findFirmware>[1] = {}) {
  const warnings: string[] = [];
  const found = await findFirmware(arch, { root, env: {}, onWarning: (w) => warnings.push(w), ...opts });
  return { found, warnings };
}

describe("findFirmware from QEMU firmware descriptors", () => {
  it("matches architecture and machine, and returns the aarch64 UEFI code image with its vars template", async () => {
    const root = await rootWithImages();
    await put(
      root,
      `${SHARE}/60-edk2-aarch64.json`,
      descriptor({ code: "/usr/share/AAVMF/AAVMF_CODE.fd", vars: "/usr/share/AAVMF/AAVMF_VARS.fd" }),
    );
    await put(
      root,
      `${SHARE}/50-edk2-x86_64.json`,
      descriptor({ arch: "x86_64", machines: ["pc-q35-*"], code: "/usr/share/AAVMF/other_CODE.fd" }),
    );
    const { found, warnings } = await find(root, "arm64");
    expect(found).toEqual({
      code: path.join(root, "usr/share/AAVMF/AAVMF_CODE.fd"),
      vars: path.join(root, "usr/share/AAVMF/AAVMF_VARS.fd"),
      format: "raw",
      device: "flash",
      mode: "split",
      descriptor: path.join(root, SHARE, "60-edk2-aarch64.json"),
      features: ["verbose-static"],
    });
    expect(warnings).toEqual([]);
    expect((await find(root, "arm64", { machine: "virt-7.2" })).found?.code).toBe(found?.code);
    expect((await find(root, "arm64", { machine: "sbsa-ref" })).found?.descriptor).toBeUndefined();
  });

  it("orders by file name, skips Secure Boot firmware unless asked for it", async () => {
    const root = await rootWithImages();
    await put(
      root,
      `${SHARE}/30-secure.json`,
      descriptor({ code: "/usr/share/AAVMF/AAVMF_CODE.ms.fd", features: ["secure-boot", "enrolled-keys"] }),
    );
    await put(root, `${SHARE}/70-plain-b.json`, descriptor({ code: "/usr/share/AAVMF/other_CODE.fd" }));
    await put(root, `${SHARE}/60-plain-a.json`, descriptor({ code: "/usr/share/AAVMF/AAVMF_CODE.fd" }));
    expect((await find(root, "arm64")).found?.descriptor).toBe(path.join(root, SHARE, "60-plain-a.json"));
    const secure = await find(root, "arm64", { features: ["secure-boot"], excludeFeatures: [] });
    expect(secure.found?.descriptor).toBe(path.join(root, SHARE, "30-secure.json"));
  });

  it("lets /etc and $XDG_CONFIG_HOME override a distribution file of the same name; an empty file masks it", async () => {
    const root = await rootWithImages();
    await put(root, `${SHARE}/60-edk2.json`, descriptor({ code: "/usr/share/AAVMF/AAVMF_CODE.fd" }));
    await put(root, "etc/qemu/firmware/60-edk2.json", descriptor({ code: "/usr/share/AAVMF/other_CODE.fd" }));
    expect((await find(root, "arm64")).found?.code).toBe(path.join(root, "usr/share/AAVMF/other_CODE.fd"));

    await put(root, "home/me/.config/qemu/firmware/60-edk2.json", "");
    const masked = await find(root, "arm64", { env: { HOME: "/home/me" } });
    // Masked descriptors leave only the well-known fallback paths.
    expect(masked.found?.descriptor).toBeUndefined();
    expect(masked.found?.code).toBe(path.join(root, "usr/share/AAVMF/AAVMF_CODE.fd"));

    await put(
      root,
      "xdg/qemu/firmware/60-edk2.json",
      descriptor({ code: "/usr/share/AAVMF/AAVMF_CODE.ms.fd" }),
    );
    const xdg = await find(root, "arm64", { env: { HOME: "/home/me", XDG_CONFIG_HOME: "/xdg" } });
    expect(xdg.found?.descriptor).toBe(path.join(root, "xdg/qemu/firmware/60-edk2.json"));
  });

  it("reads Homebrew's share directory", async () => {
    const root = await tempRoot();
    await put(root, "opt/homebrew/Cellar/qemu/9.2/share/qemu/edk2-aarch64-code.fd", "image");
    await put(
      root,
      "opt/homebrew/share/qemu/firmware/60-edk2-aarch64.json",
      descriptor({ code: "/opt/homebrew/Cellar/qemu/9.2/share/qemu/edk2-aarch64-code.fd" }),
    );
    const { found } = await find(root, "arm64");
    expect(found?.code).toBe(path.join(root, "opt/homebrew/Cellar/qemu/9.2/share/qemu/edk2-aarch64-code.fd"));
    expect(found?.vars).toBeUndefined();
  });

  it("skips malformed and dangling descriptors with a warning and keeps going", async () => {
    const root = await rootWithImages();
    await put(root, `${SHARE}/10-broken.json`, "{ not json");
    await put(root, `${SHARE}/20-wrong-shape.json`, JSON.stringify({ "interface-types": "uefi" }));
    await put(root, `${SHARE}/30-dangling.json`, descriptor({ code: "/usr/share/AAVMF/gone.fd" }));
    await put(root, `${SHARE}/40-array.json`, "[]");
    await put(root, `${SHARE}/60-good.json`, descriptor({ code: "/usr/share/AAVMF/AAVMF_CODE.fd" }));
    const { found, warnings } = await find(root, "arm64");
    expect(found?.descriptor).toBe(path.join(root, SHARE, "60-good.json"));
    expect(warnings).toHaveLength(4);
    expect(warnings[0]).toMatch(/10-broken\.json: not JSON/);
    expect(warnings[1]).toMatch(/20-wrong-shape\.json: malformed/);
    expect(warnings[2]).toMatch(/30-dangling\.json: its image \/usr\/share\/AAVMF\/gone\.fd does not exist/);
    expect(warnings[3]).toMatch(/40-array\.json: malformed/);
  });

  it("reports the qcow2 format of a descriptor's images", async () => {
    const root = await rootWithImages();
    await put(
      root,
      `${SHARE}/50-qcow2.json`,
      descriptor({
        code: "/usr/share/AAVMF/AAVMF_CODE.fd",
        vars: "/usr/share/AAVMF/AAVMF_VARS.fd",
        format: "qcow2",
      }),
    );
    expect((await find(root, "arm64")).found?.format).toBe("qcow2");
  });
});

describe("findFirmware fallbacks and errors", () => {
  it("falls back to the well-known Debian AAVMF paths without descriptors", async () => {
    const root = await rootWithImages();
    const { found } = await find(root, "arm64");
    expect(found).toMatchObject({
      code: path.join(root, "usr/share/AAVMF/AAVMF_CODE.fd"),
      vars: path.join(root, "usr/share/AAVMF/AAVMF_VARS.fd"),
      mode: "split",
    });
  });

  it("falls back to an old -bios style image when that is all there is", async () => {
    const root = await tempRoot();
    await put(root, "usr/share/qemu-efi-aarch64/QEMU_EFI.fd", "image");
    expect((await find(root, "arm64")).found).toMatchObject({
      device: "memory",
      code: path.join(root, "usr/share/qemu-efi-aarch64/QEMU_EFI.fd"),
    });
  });

  it("returns undefined when there is no firmware at all", async () => {
    const root = await tempRoot();
    expect((await find(root, "arm64")).found).toBeUndefined();
    expect((await listFirmware("amd64", { root, env: {} })).matches).toEqual([]);
  });

  it("throws UNSUPPORTED_ARCH for an unknown architecture", async () => {
    const error = await findFirmware("mips", { env: {} }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HostDetectError);
    expect((error as HostDetectError).code).toBe("UNSUPPORTED_ARCH");
  });

  it("finds this machine's OVMF through Debian's real descriptors, without Secure Boot", async () => {
    const { found, warnings } = await find("/", "amd64");
    expect(warnings).toEqual([]);
    expect(found).toMatchObject({
      code: "/usr/share/OVMF/OVMF_CODE_4M.fd",
      vars: "/usr/share/OVMF/OVMF_VARS_4M.fd",
      descriptor: "/usr/share/qemu/firmware/60-edk2-x86_64.json",
    });
    expect(found?.features).not.toContain("secure-boot");
    const all = await listFirmware("amd64", { env: {}, excludeFeatures: [] });
    expect(all.matches[0]?.descriptor).toBe("/usr/share/qemu/firmware/40-edk2-x86_64-secure-enrolled.json");
  });
});
