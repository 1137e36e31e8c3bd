// Each library's first README example is a complete program. Here it runs as a user would run it: copied from the
// README, importing the library from its packed tarball, which npm installed into a project outside the workspace.
// So a README cannot drift from the code, and the tarballs are proven to work where nothing else is around.

import { execFileSync, spawn, spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FakeGitHub, makeZip } from "../../packages/artifacts/test/fake-github.js";
import { LIBRARIES, type Library, packLibraries, root } from "../libraries.js";

const work = mkdtempSync(join(tmpdir(), "readme-examples-"));
const project = join(work, "project");
const asRoot = process.getuid?.() === 0;

/** The first fenced block of a library's README, which must be the runnable example. */
function firstExample(library: Library): string {
  const readme = readFileSync(join(root, "packages", library, "README.md"), "utf8");
  const block = /^```(\w*)\n([\s\S]*?)^```$/m.exec(readme);
  if (block?.[1] !== "js")
    throw new Error(
      `packages/${library}/README.md: the first code block must be the example program, fenced as js`,
    );
  return block[2] as string;
}

interface Run {
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

/** Runs `node <args>` in `cwd` to its end; `prefix` goes before node (setpriv). */
function runNode(
  args: string[],
  cwd: string,
  env: NodeJS.ProcessEnv = {},
  prefix: string[] = [],
): Promise<Run> {
  const [command, ...rest] = [...prefix, process.execPath, ...args] as [string, ...string[]];
  const child = spawn(command, rest, {
    cwd,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const stdout: Buffer[] = [];
  let stderr = "";
  child.stdout.on("data", (chunk: Buffer) => stdout.push(chunk));
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
    stderr += chunk;
  });
  return new Promise((done, fail) => {
    child.once("error", fail);
    child.once("close", (code) => done({ code, stdout: Buffer.concat(stdout), stderr }));
  });
}

function runExample(library: Library, env: NodeJS.ProcessEnv = {}, prefix: string[] = []): Promise<Run> {
  return runNode(["example.mjs"], join(project, library), env, prefix);
}

beforeAll(() => {
  const tarballs = packLibraries(mkdtempSync(join(work, "tarballs-")));
  mkdirSync(project);
  writeFileSync(
    join(project, "package.json"),
    JSON.stringify({
      private: true,
      type: "module",
      dependencies: Object.fromEntries(tarballs.map((t) => [t.name, `file:${t.path}`])),
      // host-detect depends on @stack/qmp@^0.1.0: the tarball answers for it, never a registry.
      overrides: Object.fromEntries(tarballs.map((t) => [t.name, `$${t.name}`])),
      // zstd-napi (of @stack/artifacts) builds its addon at install; newer npm runs only approved install scripts.
      allowScripts: { "zstd-napi": true },
    }),
  );
  // Nothing under @stack may come from a registry, even if npm went looking: someone else may own the scope there.
  writeFileSync(join(project, ".npmrc"), "@stack:registry=http://127.0.0.1:9/\n");
  // Where no prebuilt zstd-napi downloads, node-gyp compiles it against the headers of the Node.js running this.
  const nodeDir = resolve(dirname(process.execPath), "..");
  const nodeHeaders = existsSync(join(nodeDir, "include", "node", "node.h"))
    ? { npm_config_nodedir: nodeDir }
    : {};
  execFileSync("npm", ["install", "--no-audit", "--no-fund", "--prefer-offline", "--loglevel=error"], {
    cwd: project,
    env: { ...process.env, ...nodeHeaders, npm_config_update_notifier: "false" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  for (const library of LIBRARIES) {
    mkdirSync(join(project, library));
    writeFileSync(join(project, library, "example.mjs"), firstExample(library));
  }
  // CommonJS code loading every library, for Node.js and for TypeScript.
  const requires = LIBRARIES.map((l) => `  "@stack/${l}": require("@stack/${l}"),`).join("\n");
  writeFileSync(
    join(project, "require.cjs"),
    `const libraries = {\n${requires}\n};\n` +
      "const names = Object.entries(libraries).map(([name, m]) => [name, Object.keys(m).sort()]);\n" +
      "console.log(JSON.stringify(Object.fromEntries(names)));\n",
  );
}, 600_000);

afterAll(() => {
  rmSync(work, { recursive: true, force: true });
});

describe("the packed libraries", () => {
  it("were installed from their tarballs", () => {
    const lock = JSON.parse(readFileSync(join(project, "package-lock.json"), "utf8")) as {
      packages: Record<string, { resolved?: string }>;
    };
    for (const library of LIBRARIES)
      expect(lock.packages[`node_modules/@stack/${library}`]?.resolved, library).toMatch(/^file:.*\.tgz$/);
  });

  it("type-check: each README example, and each library required from CommonJS (TypeScript 5.8+, nodenext)", () => {
    writeFileSync(
      join(project, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: {
          module: "nodenext",
          target: "es2022",
          strict: true,
          noEmit: true,
          allowJs: true,
          checkJs: true,
          types: ["node"],
          typeRoots: [join(root, "node_modules", "@types")],
        },
        include: ["*/example.mjs", "require.cjs"],
      }),
    );
    const tsc = join(root, "node_modules", "typescript", "bin", "tsc");
    const check = spawnSync(process.execPath, [tsc, "-p", project], { encoding: "utf8" });
    expect(check.stdout + check.stderr).toBe("");
    expect(check.status).toBe(0);
  });

  it("load through require() as through import, or say why not on a Node.js without require(esm)", async () => {
    const run = await runNode(["require.cjs"], project);
    if (!process.features.require_module) {
      expect(run.stderr).toContain("ERR_REQUIRE_ESM");
      return;
    }
    expect(run.code, run.stderr).toBe(0);
    const imported = await runNode(
      [
        "--input-type=module",
        "-e",
        `const names = ${JSON.stringify(LIBRARIES.map((l) => `@stack/${l}`))};\n` +
          "const keys = await Promise.all(names.map(async (n) => [n, Object.keys(await import(n)).sort()]));\n" +
          "console.log(JSON.stringify(Object.fromEntries(keys)));\n",
      ],
      project,
    );
    expect(imported.code, imported.stderr).toBe(0);
    const viaImport = JSON.parse(imported.stdout.toString()) as Record<string, string[]>;
    expect(JSON.parse(run.stdout.toString())).toEqual(viaImport);
    for (const library of LIBRARIES)
      expect(viaImport[`@stack/${library}`]?.length, library).toBeGreaterThan(0);
  });
});

describe("README example: @stack/iso9660", () => {
  const dir = join(project, "iso9660");

  function extract(iso: string): string {
    const to = mkdtempSync(join(work, "iso-"));
    execFileSync("bsdtar", ["-xf", iso, "-C", to]);
    return to;
  }

  it("writes three images that isoinfo, bsdtar and xorriso read back", async () => {
    const run = await runExample("iso9660");
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    writeFileSync(join(dir, "tools.iso"), run.stdout);

    const seedInfo = execFileSync("isoinfo", ["-d", "-i", join(dir, "seed.iso")], { encoding: "utf8" });
    expect(seedInfo).toMatch(/^Volume id: cidata$/m);
    const seed = extract(join(dir, "seed.iso"));
    expect(readdirSync(seed).sort()).toEqual(["meta-data", "user-data"]);
    expect(readFileSync(join(seed, "user-data"), "utf8")).toMatch(/^#cloud-config\n/);

    const config = extract(join(dir, "config.iso"));
    expect(readFileSync(join(config, "app", "settings.env"))).toEqual(
      readFileSync(join(dir, "config", "app", "settings.env")),
    );

    const tools = extract(join(dir, "tools.iso"));
    expect(readFileSync(join(tools, "bin", "tool"))).toEqual(readFileSync(join(dir, "tool")));
    expect(statSync(join(tools, "bin", "tool")).mode & 0o777).toBe(0o755);
    expect(readlinkSync(join(tools, "tool"))).toBe("bin/tool");
    const listing = execFileSync(
      "xorriso",
      ["-indev", join(dir, "tools.iso"), "-find", "/", "-exec", "lsdl"],
      {
        encoding: "utf8",
        stdio: ["ignore", "pipe", "ignore"],
      },
    );
    expect(listing).toMatch(/^-rwxr-xr-x .* '\/bin\/tool'$/m);
    expect(listing).toMatch(/^lrwxrwxrwx .* '\/tool' -> 'bin\/tool'$/m);
  });

  it("gives stack traces that name its TypeScript sources, which ship in the package", async () => {
    writeFileSync(
      join(dir, "trace.mjs"),
      'import { buildIso } from "@stack/iso9660";\n' +
        'await buildIso([{ type: "file", path: "../escape", content: "" }]).catch((e) => console.log(e.stack));\n',
    );
    const run = await runNode(["--enable-source-maps", "trace.mjs"], dir);
    expect(run.code, run.stderr).toBe(0);
    const files = [...run.stdout.toString().matchAll(/(?:file:\/\/)?(\/[^\s()]+\.ts):\d+:\d+/g)].map(
      (m) => m[1],
    );
    expect(files.length, run.stdout.toString()).toBeGreaterThan(0);
    for (const file of files) {
      expect(file).toContain(join("node_modules", "@stack", "iso9660", "src"));
      expect(existsSync(file as string), file).toBe(true);
    }
  });
});

describe("README example: @stack/qmp", () => {
  it("saves a TCG guest with QEMU and resumes it in a second QEMU", async () => {
    const run = await runExample("qmp");
    const stdout = run.stdout.toString();
    expect(run.code, run.stderr).toBe(0);
    expect(stdout).toMatch(/^saved \d+ bytes with (x-ignore-shared|mapped-ram|file|exec)$/m);
    expect(stdout).toMatch(/^restored: running$/m);
  });

  it("ends with QEMU's own error when QEMU refuses to start", async () => {
    const qemu = execFileSync("bash", ["-c", "command -v qemu-system-x86_64"], { encoding: "utf8" }).trim();
    const bin = mkdtempSync(join(work, "bin-"));
    writeFileSync(join(bin, "qemu-system-x86_64"), `#!/bin/sh\nexec ${qemu} "$@" -no-such-option\n`);
    chmodSync(join(bin, "qemu-system-x86_64"), 0o755);
    const run = await runExample("qmp", { PATH: `${bin}:${process.env.PATH}` });
    expect(run.code).not.toBe(0);
    expect(run.stderr).toMatch(/qemu-system-x86_64: -no-such-option: invalid option/);
    expect(run.stderr).toContain("capture: QEMU exited (status 1) before QMP answered");
  });
});

describe("README example: @stack/qga", () => {
  it("runs a command through a real qemu-ga on this host", async () => {
    // As root, qemu-ga could set the host clock: the example leaves that out, and it runs without CAP_SYS_TIME anyway.
    const run = await runExample("qga", {}, asRoot ? ["setpriv", "--bounding-set", "-sys_time"] : []);
    const stdout = run.stdout.toString();
    expect(run.code, run.stderr).toBe(0);
    expect(stdout).toMatch(/^qemu-ga \d+\.\d+/m);
    expect(stdout).toContain("0 HELLO FROM THE HOST\n");
  });
});

describe("README example: @stack/host-detect", () => {
  it("prints the doctor report, with the probe cached under HOME", async () => {
    const home = mkdtempSync(join(work, "home-"));
    const run = await runExample("host-detect", { HOME: home });
    const stdout = run.stdout.toString();
    expect(run.code, run.stderr).toBe(0);
    const checks = stdout.split("\n").filter((line) => /^\S/.test(line));
    expect(checks.length).toBeGreaterThan(3);
    for (const line of checks) expect(line).toMatch(/^(ok |warn|fail) [^:]+: /);
    expect(stdout).toMatch(/^ok {3}QEMU for amd64 guests: /m);
    expect(readdirSync(join(home, ".stack", "emulator", "cache")).length).toBeGreaterThan(0);
  });
});

describe("README example: @stack/artifacts", () => {
  let fake: FakeGitHub;
  afterAll(() => fake?.close());

  it("downloads a release asset and a pull request's artifact from a stand-in at GITHUB_API_URL", async () => {
    fake = await FakeGitHub.start({ token: "readme-token" });
    const repo = "stack-auth/stack-auth";
    const disk = randomBytes(256 * 1024);
    const compressed = execFileSync("zstd", ["-q", "-c"], { input: disk });
    fake.addRelease(repo, {
      tag: "emulator-v1.2.0",
      assets: [{ name: "stack-emulator-amd64.qcow2.zst", content: compressed }],
    });
    const headSha = "c0ffee".padEnd(40, "0");
    fake.addPull(repo, 1234, { sha: headSha });
    fake.addRun(repo, {
      id: 42,
      headSha,
      workflow: "emulator.yml",
      conclusion: "success",
      artifacts: [
        {
          name: "stack-emulator-amd64",
          content: makeZip([
            { name: "image.json", data: "{}\n" },
            { name: "disk.qcow2", data: disk },
          ]),
        },
      ],
    });
    const home = mkdtempSync(join(work, "home-"));
    const run = await runExample("artifacts", {
      GITHUB_API_URL: fake.apiUrl,
      GH_TOKEN: "readme-token",
      HOME: home,
    });
    expect(run.code, run.stderr).toBe(0);
    const [release, artifact] = run.stdout.toString().trim().split("\n") as [string, string];

    const digest = createHash("sha256").update(compressed).digest("hex");
    const cached = join(home, ".stack", "emulator", "images", "cache", `sha256-${digest}`);
    expect(release).toBe(`${join(cached, "stack-emulator-amd64.qcow2")} digest false`);
    expect(readFileSync(join(cached, "stack-emulator-amd64.qcow2"))).toEqual(disk);

    expect(artifact).toBe(join(project, "artifacts", "pr-1234-image"));
    expect(readdirSync(artifact).sort()).toEqual(["disk.qcow2", "image.json"]);
    expect(readFileSync(join(artifact, "disk.qcow2"))).toEqual(disk);
  });
});
