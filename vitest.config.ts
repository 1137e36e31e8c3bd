import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

const packages = ["iso9660", "qmp", "qga", "host-detect", "artifacts"];
// Tests import sibling packages from source, so `pnpm test` needs no prior build. A subpath export comes before
// its package's entry: the first alias that matches wins, and `@stack/qmp` also matches `@stack/qmp/protocol`.
const source = (file: string) => fileURLToPath(new URL(`./packages/${file}`, import.meta.url));
const alias = Object.fromEntries([
  ["@stack/qmp/protocol", source("qmp/src/protocol/index.ts")],
  ...packages.map((name) => [`@stack/${name}`, source(`${name}/src/index.ts`)]),
]);

export default defineConfig({
  test: {
    projects: [
      {
        resolve: { alias },
        test: {
          name: "unit",
          include: [
            "packages/*/test/**/*.test.ts",
            "guest/test/**/*.test.ts",
            "docker/test/**/*.test.ts",
            "scripts/test/**/*.test.ts",
          ],
          exclude: ["**/*.vm.test.ts", "**/node_modules/**"],
          testTimeout: 60_000,
          hookTimeout: 60_000,
          sequence: { groupOrder: 0 },
        },
      },
      {
        resolve: { alias },
        test: {
          // Tests that boot VMs: two cores cannot run several TCG guests at once.
          name: "vm",
          include: ["packages/*/test/**/*.vm.test.ts", "guest/test/**/*.vm.test.ts"],
          fileParallelism: false,
          maxWorkers: 1,
          testTimeout: 180_000,
          hookTimeout: 180_000,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
