import { describe, expect, it } from "vitest";
import { bestSaveMethod } from "../src/index.js";

const v = (major: number, minor: number) => ({ major, minor, micro: 0 });
const QEMU_7_2_CAPS = ["xbzrle", "events", "x-ignore-shared", "multifd"];

describe("bestSaveMethod: one policy from probed abilities", () => {
  it("keeps RAM in its shared file where x-ignore-shared exists (QEMU >= 4.0)", () => {
    expect(bestSaveMethod({ version: v(7, 2), migrationCapabilities: QEMU_7_2_CAPS, sharedRam: true })).toBe(
      "x-ignore-shared",
    );
  });

  it("falls to the fastest stream this QEMU writes when RAM is not shared", () => {
    const without = { migrationCapabilities: QEMU_7_2_CAPS, sharedRam: false };
    expect(bestSaveMethod({ ...without, version: v(7, 2) })).toBe("exec");
    expect(bestSaveMethod({ ...without, version: v(8, 2) })).toBe("file");
    expect(
      bestSaveMethod({
        version: v(9, 0),
        migrationCapabilities: [...QEMU_7_2_CAPS, "mapped-ram"],
        sharedRam: false,
      }),
    ).toBe("mapped-ram");
  });

  it("does not choose x-ignore-shared without the capability, however shared the RAM", () => {
    expect(bestSaveMethod({ version: v(7, 2), migrationCapabilities: ["events"], sharedRam: true })).toBe(
      "exec",
    );
    expect(bestSaveMethod({ version: v(3, 1), migrationCapabilities: QEMU_7_2_CAPS, sharedRam: true })).toBe(
      "exec",
    );
  });
});
