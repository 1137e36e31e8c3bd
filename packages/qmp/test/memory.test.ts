import { describe, expect, it } from "vitest";
import { memoryBackend, memoryBackendArgs, QmpError } from "../src/index.js";
import { migrationUri, shellQuote } from "../src/save-method.js";

describe("memoryBackendArgs", () => {
  it("builds the -object and -machine arguments, doubling commas in the path", () => {
    expect(memoryBackendArgs({ id: "mem0", path: "/tmp/a,b/ram", sizeMiB: 256, share: true })).toEqual([
      "-object",
      "memory-backend-file,id=mem0,mem-path=/tmp/a,,b/ram,size=256M,share=on",
      "-machine",
      "memory-backend=mem0",
    ]);
    const parts = memoryBackend({ id: "mem0", path: "/r", sizeMiB: 64, share: false });
    expect(parts.objectArgs[1]).toMatch(/share=off$/);
    expect(`pc,accel=tcg,${parts.machineProperty}`).toBe("pc,accel=tcg,memory-backend=mem0");
  });

  it("without a path, names anonymous memory like a file's, so streams move between the two", () => {
    expect(memoryBackendArgs({ id: "ram0", sizeMiB: 256, share: false })).toEqual([
      "-object",
      "memory-backend-ram,id=ram0,size=256M",
      "-machine",
      "memory-backend=ram0",
    ]);
  });

  it("rejects ids QEMU would refuse and sizes that are not whole MiB", () => {
    expect(() => memoryBackendArgs({ id: "mem,0", path: "/r", sizeMiB: 64, share: true })).toThrow(QmpError);
    expect(() => memoryBackendArgs({ id: "mem0", path: "/r", sizeMiB: 0.5, share: true })).toThrow(
      /whole number/,
    );
  });
});

describe("migrationUri", () => {
  it("quotes exec paths for /bin/sh and refuses commas in file: paths", () => {
    expect(shellQuote("it's here")).toBe("'it'\\''s here'");
    expect(migrationUri("exec", "/tmp/a b/s", "out")).toBe("exec:cat > '/tmp/a b/s'");
    expect(migrationUri("x-ignore-shared", "/tmp/s", "in")).toBe("exec:cat '/tmp/s'");
    expect(migrationUri("file", "/tmp/s", "out")).toBe("file:/tmp/s");
    expect(() => migrationUri("mapped-ram", "/tmp/a,b", "out")).toThrow(/comma/);
  });
});
