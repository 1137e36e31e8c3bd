/**
 * Builds what the package ships: the bundled CLI in dist/ and the dev image's builder in guest/.
 *
 * The bundle is for start-up time and for installs outside this repository: Node loads one file instead of about a
 * hundred modules (roughly 40 ms on every command, a good part of a resume), and every dependency is inlined, so
 * the published package needs nothing from a registry. The one exception is what package.json lists under
 * optionalDependencies (zstd-napi, a native addon that may fail to compile on a user's machine): it stays external,
 * loaded from node_modules on first use. Code that only `pull` and `list-releases` need stays in a chunk loaded on
 * demand. Everything lands in dist/ itself so that packageFile() finds the package's directory from any chunk.
 *
 * The dev image (`start --image dev`) is built on the user's machine by guest/build-dev-image from the guest files
 * in guest/dev; both are copied into the package's own guest/ folder, so an installed CLI finds them next to itself
 * and the repository's CLI runs the same lookup.
 */
import { chmodSync, cpSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { build } from "esbuild";

const root = join(import.meta.dirname, "..");
const repo = join(root, "..", "..");
const dist = join(root, "dist");
const manifest = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));

// Chunk names carry a content hash, and earlier builds emitted more: nothing of a previous build may linger.
rmSync(dist, { recursive: true, force: true });
await build({
  entryPoints: { "stack-emulator": join(root, "src", "cli", "main.ts") },
  outdir: dist,
  chunkNames: "stack-emulator-[hash]",
  bundle: true,
  splitting: true,
  format: "esm",
  platform: "node",
  target: "node20",
  external: Object.keys(manifest.optionalDependencies ?? {}),
  // commander, extract-zip and their dependencies are CommonJS and require Node's built-ins: give the ESM bundle a
  // real `require`.
  banner: {
    js: 'import { createRequire as __createRequire } from "node:module";\nconst require = __createRequire(import.meta.url);',
  },
  logLevel: "warning",
});
chmodSync(join(dist, "stack-emulator.js"), 0o755);

const guest = join(root, "guest");
rmSync(guest, { recursive: true, force: true });
// Modes matter (the builder and the guest's scripts are executables); timestamps too: the CLI compares the built
// image's mtime with its inputs' to skip asking the builder.
for (const input of ["build-dev-image", "dev"])
  cpSync(join(repo, "guest", input), join(guest, input), { recursive: true, preserveTimestamps: true });
