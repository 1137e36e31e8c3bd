import { describe, expect, it } from "vitest";
import { compress } from "zstd-napi";
import { zstdContentSize } from "../src/zstd.js";

describe("zstdContentSize", () => {
  it("reads the size zstd records, for small and large inputs", () => {
    for (const size of [0, 200, 300, 70_000, 5_000_000]) {
      expect(zstdContentSize(compress(Buffer.alloc(size, 3)))).toBe(size);
    }
  });

  it("returns undefined for other data and truncated headers", () => {
    expect(zstdContentSize(Buffer.from("PK\u0003\u0004 not zstd"))).toBeUndefined();
    expect(zstdContentSize(compress(Buffer.alloc(70_000)).subarray(0, 6))).toBeUndefined();
  });
});
