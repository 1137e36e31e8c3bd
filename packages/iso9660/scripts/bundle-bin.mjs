/**
 * Bundles the stack-mkiso bin into one CommonJS file, dist/stack-mkiso.cjs: Node then reads and compiles one file
 * instead of resolving and linking a dozen ES modules, which saves about 10 ms of CPU at every start, a fifth of
 * what writing a seed image costs as a process. The library (dist/index.js and the rest, from tsc) is unchanged;
 * the source map points at src/, which the package ships.
 */
import { chmodSync } from "node:fs";
import { join } from "node:path";
import { build } from "esbuild";

const root = join(import.meta.dirname, "..");
const outfile = join(root, "dist", "stack-mkiso.cjs");
await build({
  entryPoints: [join(root, "src", "cli.ts")],
  outfile,
  bundle: true,
  format: "cjs",
  platform: "node",
  target: "node20",
  sourcemap: "linked",
  logLevel: "warning",
});
chmodSync(outfile, 0o755);
