/**
 * Bundles the CLI into dist/stack-emulator.js (the bin) for start-up time: Node loads one file instead of about
 * a hundred modules, which saves roughly 40 ms on every command, a good part of a resume. Code that only `pull`
 * and `list-releases` need stays in a chunk loaded on demand; @stack/artifacts (whose extract-zip is CommonJS) and
 * the native zstd-napi are loaded from node_modules as usual. Everything lands in dist/ itself so that paths the
 * code derives from import.meta.url (package.json, the repository's guest/ directory) stay as in dist/cli.js.
 * The bundle is the package's only build output (type checking is the typecheck task's).
 */
import { chmodSync, rmSync } from "node:fs";
import { join } from "node:path";
import { build } from "esbuild";

const root = join(import.meta.dirname, "..");
const dist = join(root, "dist");
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
  external: ["@stack/artifacts", "zstd-napi"],
  // commander is CommonJS and requires Node's built-ins: give the ESM bundle a real `require`.
  banner: {
    js: 'import { createRequire as __createRequire } from "node:module";\nconst require = __createRequire(import.meta.url);',
  },
  sourcemap: "linked",
  logLevel: "warning",
});
chmodSync(join(dist, "stack-emulator.js"), 0o755);
