import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { describe, expect, it } from "vitest";

/**
 * The folders of src/ are the CLI's layers, lowest first (src/README.md says what each holds). A module imports its
 * own folder or a lower one, never a higher one; only the CLI layer reads the environment (everything else gets
 * the settings it built); no module grows past 300 lines.
 */
const LAYERS = ["core", "contract", "image", "host", "vm", "guest", "instance", "app", "cli"] as const;
const SRC = join(import.meta.dirname, "..", "src");

function modules(dir = SRC): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory()
      ? modules(join(dir, entry.name))
      : entry.name.endsWith(".ts")
        ? [join(dir, entry.name)]
        : [],
  );
}

const layerOf = (file: string) => relative(SRC, file).split("/")[0] as (typeof LAYERS)[number];

describe("the CLI's layers", () => {
  it("puts every module in a layer folder", () => {
    for (const file of modules()) expect(LAYERS, relative(SRC, file)).toContain(layerOf(file));
  });

  it("has no module import a higher layer", () => {
    const violations: string[] = [];
    for (const file of modules()) {
      const own = LAYERS.indexOf(layerOf(file));
      for (const [, target] of readFileSync(file, "utf8").matchAll(/from "(\.\.\/[a-z]+)\//g)) {
        const layer = target?.slice(3) as (typeof LAYERS)[number];
        if (LAYERS.indexOf(layer) > own) violations.push(`${relative(SRC, file)} imports ${layer}`);
      }
    }
    expect(violations).toEqual([]);
  });

  it("reads the environment in the CLI layer only", () => {
    const readers: string[] = [];
    const reads = [
      /process\.env/,
      /\bhostEnv(\.[A-Z_]|\[)/,
      /\benv\.(STACK_|EMULATOR_|PORT_PREFIX|NEXT_PUBLIC_|GH_|GITHUB_)/,
      /\benv\[["'`](STACK_|EMULATOR_)/,
    ];
    for (const file of modules()) {
      if (layerOf(file) === "cli") continue;
      const text = readFileSync(file, "utf8");
      for (const pattern of reads) if (pattern.test(text)) readers.push(`${relative(SRC, file)}: ${pattern}`);
    }
    expect(readers).toEqual([]);
  });

  it("keeps every module under 300 lines", () => {
    const long = modules()
      .map((file) => [relative(SRC, file), readFileSync(file, "utf8").split("\n").length] as const)
      .filter(([, lines]) => lines > 300);
    expect(long).toEqual([]);
  });
});
