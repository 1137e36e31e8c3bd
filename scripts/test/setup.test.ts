// A new machine gets nothing by hand: every host tool the tests run, and every host file they read, must come from
// a package scripts/setup installs, or from one that every Debian system has (priority required or important).

import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, realpathSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import { describe, expect, it } from "vitest";

const root = resolve(import.meta.dirname, "..", "..");
const onDebian = (() => {
  try {
    execFileSync("dpkg-query", ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
})();

/** The `probe:package ...` lines of setup's debian_packages, for this host's architecture. */
function setupPackages(): Set<string> {
  const list = execFileSync(
    "bash",
    [
      "-c",
      `source <(sed -n '/^debian_packages()/,/^}/p' "$0"); debian_packages`,
      join(root, "scripts", "setup"),
    ],
    {
      encoding: "utf8",
    },
  );
  return new Set(
    list
      .split("\n")
      .filter((line) => line.includes(":"))
      .flatMap((line) => line.slice(line.indexOf(":") + 1).split(/\s+/))
      .filter(Boolean),
  );
}

/** Setup's packages and everything they pull in (`postgresql` -> `postgresql-15`, which owns initdb). */
function withDependencies(packages: Set<string>): Set<string> {
  const closure = execFileSync(
    "apt-cache",
    [
      "depends",
      "--recurse",
      "--no-recommends",
      "--no-suggests",
      "--no-conflicts",
      "--no-breaks",
      "--no-replaces",
      "--no-enhances",
      ...packages,
    ],
    { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"], maxBuffer: 64 << 20 },
  );
  return new Set([
    ...packages,
    ...closure
      .split("\n")
      .filter((line) => /^[a-z0-9]/.test(line))
      .map((line) => line.split(":")[0] as string),
  ]);
}

function testSources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith(".ts"))
    .map((e) => join(e.parentPath, e.name))
    .filter((file) => !file.includes("node_modules") && /\/(test|bench)\//.test(file));
}

/** Commands the tests start by name: the first argument of the process helpers they use. */
function commandsTestsRun(): Map<string, string> {
  const found = new Map<string, string>();
  const call = /\b(?:execFileSync|execFile|spawnSync|spawn|mustRun|run)\(\s*"([a-z0-9][a-z0-9_.+-]*)"/g;
  const absolute = /"(\/usr\/s?bin\/[a-z0-9_.+-]+)"/g;
  for (const dir of ["packages", "guest", "docker", "scripts"]) {
    for (const file of testSources(join(root, dir))) {
      const text = readFileSync(file, "utf8");
      for (const m of text.matchAll(call)) found.set(m[1] as string, relative(root, file));
      for (const m of text.matchAll(absolute)) found.set(m[1] as string, relative(root, file));
    }
  }
  return found;
}

/** Host files (not tools) the tests read from the real root. */
const HOST_FILES = [
  "/usr/share/OVMF/OVMF_CODE_4M.fd",
  "/usr/share/OVMF/OVMF_VARS_4M.fd",
  ...postgresqlServers().map((dir) => join(dir, "bin", "initdb")),
];

/** The docker tests run a real PostgreSQL server from /usr/lib/postgresql/<version>. */
function postgresqlServers(): string[] {
  const base = "/usr/lib/postgresql";
  return existsSync(base) ? readdirSync(base).map((version) => join(base, version)) : [join(base, "missing")];
}

function which(command: string): string | undefined {
  try {
    return execFileSync("bash", ["-c", 'command -v "$0"', command], { encoding: "utf8" }).trim() || undefined;
  } catch {
    return undefined;
  }
}

/** The Debian package that owns a path (through usrmerge's /bin -> /usr/bin either way). */
function owner(path: string): string | undefined {
  const candidates = [path, realpathSync(path)];
  for (const p of [...candidates, ...candidates.map((c) => c.replace(/^\/usr\//, "/"))]) {
    try {
      return execFileSync("dpkg-query", ["-S", p], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] })
        .split("\n")
        .find((line) => !line.startsWith("diversion by"))
        ?.split(":")[0]
        ?.split(",")[0]
        ?.trim();
    } catch {
      // Not this spelling of the path.
    }
  }
  return undefined;
}

function isBaseSystem(pkg: string): boolean {
  // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's own field syntax, not a template
  const fields = execFileSync("dpkg-query", ["-W", "-f", "${Essential} ${Priority}", pkg], {
    encoding: "utf8",
  });
  return /^yes|\b(required|important)$/.test(fields.trim());
}

describe.runIf(onDebian)("scripts/setup installs what the tests use", () => {
  const installed = withDependencies(setupPackages());

  it("lists the packages the README promises, firmware included", () => {
    for (const pkg of [
      "qemu-utils",
      "qemu-guest-agent",
      "ovmf",
      "xorriso",
      "genisoimage",
      "postgresql",
      "supervisor",
    ])
      expect(installed, pkg).toContain(pkg);
  });

  it("covers every host tool a test runs and every host file a test reads", () => {
    const needs = commandsTestsRun();
    expect(needs.size).toBeGreaterThan(20);
    const missing: string[] = [];
    const check = (need: string, found: string | undefined, where: string) => {
      const path = found !== undefined && existsSync(found) ? found : undefined;
      const pkg = path === undefined ? undefined : owner(path);
      if (pkg === undefined) {
        // node, pnpm and the tests' own scripts are not Debian's to provide.
        if (path === undefined || !path.startsWith("/usr/")) {
          if (path === undefined) missing.push(`${need} (${where}): not installed on this machine`);
          return;
        }
        missing.push(`${need} (${where}): ${path} belongs to no package`);
        return;
      }
      if (!installed.has(pkg) && !isBaseSystem(pkg)) missing.push(`${need} (${where}): package ${pkg}`);
    };
    for (const [command, where] of needs) {
      if (["node", "pnpm", "npm", "npx"].includes(command)) continue;
      check(command, command.startsWith("/") ? command : which(command), where);
    }
    for (const file of HOST_FILES) check(file, file, "host file");
    expect(missing, "add these to debian_packages in scripts/setup").toEqual([]);
  });
});
