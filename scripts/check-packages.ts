/**
 * Checks what users of each library get: the tarball `pnpm publish` would upload, built from the current `dist`.
 * publint (any message, suggestions included, fails) and attw under its esm-only profile, then what neither
 * looks at: the LICENSE and CHANGELOG.md are in it, and every source map and declaration map names sources that
 * ship with it. The CLI's tarball gets publint and the LICENSE and CHANGELOG.md checks: it is a command, with no
 * exports, types or source maps for attw or the map check to look at (packages/emulator-cli/test/package.test.ts
 * installs and runs it). Run through `pnpm check-packages`, which builds first.
 *
 * attw's esm-only profile leaves out two resolutions: node10 (TypeScript's resolver from before `exports`) and
 * node16 from CommonJS, where attw's bundled TypeScript (5.6) refuses `require()` of any ES module. The libraries
 * are ES modules on purpose: Node.js from 20.19 and 22.12 `require()`s them, and so does TypeScript 5.8+ under
 * `module: nodenext`. The README examples test checks both.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { publint } from "publint";
import { formatMessage } from "publint/utils";
import { packLibraries, root, type Tarball } from "./libraries.js";

async function publintProblems(tarball: string): Promise<string[]> {
  const bytes = readFileSync(tarball);
  const { messages, pkg } = await publint({
    pack: { tarball: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) },
    level: "suggestion",
  });
  return messages.map((m) => `publint ${m.type}: ${formatMessage(m, pkg, { color: false }) ?? m.code}`);
}

function attwProblems(tarball: Tarball): string[] {
  try {
    execFileSync(
      join(root, "node_modules", ".bin", "attw"),
      [tarball.path, "--profile", "esm-only", "--format", "ascii", "--no-color"],
      { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] },
    );
    return [];
  } catch (error) {
    const { stdout, stderr } = error as { stdout?: string; stderr?: string };
    return [`attw (esm-only):\n${stdout ?? ""}${stderr ?? ""}`];
  }
}

function filesBelow(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name));
}

/** Unpacks a tarball into `unpackTo`; returns the package's directory and what it lacks of the LICENSE and CHANGELOG. */
function unpackChecked(tarball: string, unpackTo: string): { pkg: string; problems: string[] } {
  mkdirSync(unpackTo);
  execFileSync("tar", ["-xzf", tarball, "-C", unpackTo]);
  const pkg = join(unpackTo, "package");
  const problems: string[] = [];
  const license = join(pkg, "LICENSE");
  // pnpm packs the repository's LICENSE into a package that has none of its own.
  if (!existsSync(license)) problems.push("no LICENSE");
  else if (readFileSync(license, "utf8") !== readFileSync(join(root, "LICENSE"), "utf8"))
    problems.push("LICENSE is not the repository's");
  if (!existsSync(join(pkg, "CHANGELOG.md"))) problems.push("no CHANGELOG.md");
  return { pkg, problems };
}

/** What publint and attw do not check, read from the unpacked tarball; returns the problems and the map count. */
function contentProblems(tarball: Tarball, unpackTo: string): { problems: string[]; maps: number } {
  const { pkg, problems } = unpackChecked(tarball.path, unpackTo);
  const maps = filesBelow(pkg).filter((f) => f.endsWith(".map"));
  if (maps.length === 0) problems.push("no source maps");
  for (const map of maps) {
    const { sources, sourceRoot = "" } = JSON.parse(readFileSync(map, "utf8")) as {
      sources: string[];
      sourceRoot?: string;
    };
    for (const source of sources) {
      const file = resolve(dirname(map), sourceRoot, source);
      if (!file.startsWith(`${pkg}/`) || !existsSync(file))
        problems.push(
          `${relative(pkg, map)} names ${source}, which is not in the package (a stale dist file? rebuild from a clean dist)`,
        );
    }
  }
  return { problems, maps: maps.length };
}

/** Prints a package's result; returns whether it passed. */
function report(label: string, problems: string[], clean: string): boolean {
  if (problems.length === 0) console.log(`${label}: ${clean}`);
  else console.log(`${label}:\n${problems.map((p) => `  ${p.replaceAll("\n", "\n  ")}`).join("\n")}`);
  return problems.length === 0;
}

const work = mkdtempSync(join(tmpdir(), "check-packages-"));
try {
  let passed = true;
  for (const tarball of packLibraries(work)) {
    const content = contentProblems(tarball, join(work, tarball.library));
    const problems = [
      ...(await publintProblems(tarball.path)),
      ...attwProblems(tarball),
      ...content.problems,
    ];
    const clean = `publint clean, attw (esm-only) clean, LICENSE and CHANGELOG.md present, ${content.maps} maps resolve`;
    passed = report(`${tarball.name}@${tarball.version}`, problems, clean) && passed;
  }
  const cli = execFileSync(join(root, "scripts", "release", "pack-cli"), [work], { encoding: "utf8" }).trim();
  const unpacked = unpackChecked(cli, join(work, "emulator-cli"));
  const { name, version } = JSON.parse(readFileSync(join(unpacked.pkg, "package.json"), "utf8"));
  const cliProblems = [...(await publintProblems(cli)), ...unpacked.problems];
  const cliClean = "publint clean, LICENSE and CHANGELOG.md present (a command: nothing for attw, no maps)";
  passed = report(`${name}@${version}`, cliProblems, cliClean) && passed;
  process.exitCode = passed ? 0 : 1;
} finally {
  rmSync(work, { recursive: true, force: true });
}
