import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/**
 * The directory of this package (the one holding its package.json), found from this module's own location: the
 * same answer from the sources (src/core/) and from the bundle (dist/), which sit at different depths.
 */
function findPackageRoot(): string {
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; dir = dirname(dir)) {
    const manifest = join(dir, "package.json");
    if (existsSync(manifest) && JSON.parse(readFileSync(manifest, "utf8")).name === "emulator-cli")
      return dir;
    if (dirname(dir) === dir) throw new Error("emulator-cli: cannot find the package's own directory");
  }
}

let root: string | undefined;

/** A file of this package by its path from the package's directory (`assets/base.env`, `package.json`). */
export function packageFile(relative: string): string {
  root ??= findPackageRoot();
  return join(root, relative);
}
