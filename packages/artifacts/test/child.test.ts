import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { GitHubClient } from "../src/index.js";
import { FakeGitHub, type RequestRecord, sha256 } from "./fake-github.js";

const TOKEN = "ghp_kill_test_token";
const REPO = "acme/images";
const MiB = 1024 * 1024;
const ROOT = fileURLToPath(new URL("../../..", import.meta.url));
const CHILD = fileURLToPath(new URL("./download-child.ts", import.meta.url));

let fake: FakeGitHub | undefined;
let dir: string | undefined;

afterEach(async () => {
  await fake?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

interface Run {
  child: ChildProcess;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>;
}

function start(opts: object): Run {
  const child = spawn(process.execPath, ["--import", "tsx", CHILD, JSON.stringify(opts)], {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d) => {
    stdout += d;
  });
  child.stderr!.on("data", (d) => {
    stderr += d;
  });
  const exit = new Promise<Awaited<Run["exit"]>>((resolve) => {
    child.on("exit", (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
  return { child, exit };
}

/** Where a storage request's range starts and ends (exclusive); open-ended ranges run to `size`. */
function span(r: RequestRecord, size: number): [number, number] {
  const m = /^bytes=(\d+)-(\d*)$/.exec(r.headers.range ?? "");
  if (!m) return [0, size];
  return [Number(m[1]), m[2] ? Number(m[2]) + 1 : size];
}

type Trigger = "time" | "inside a range" | "end of a range";

describe("a download killed with SIGKILL", () => {
  it("resumes each time without fetching recorded ranges again, and never leaves an unverified file under the final name", async () => {
    // Eight connections at 4 MiB/s each: about two seconds, so that kills land all over the download.
    fake = await FakeGitHub.start({ token: TOKEN, bytesPerSecond: 4 * MiB });
    const content = randomBytes(48 * MiB);
    const digest = sha256(content);
    fake.addRelease(REPO, { tag: "v1", assets: [{ name: "disk.qcow2", content }] });
    const release = await new GitHubClient({ apiUrl: fake.apiUrl, token: TOKEN }).releaseByTag(REPO, "v1");
    dir = await mkdtemp(join(tmpdir(), "artifacts-kill-"));
    const dest = join(dir, "disk.qcow2");
    const opts = {
      url: release.assets[0]!.url,
      dest,
      headers: { authorization: `Bearer ${TOKEN}`, accept: "application/octet-stream" },
      expectedSha256: digest,
      retryDelayMs: 10,
    };

    const kills: string[] = [];
    let recorded: [number, number][] = [];
    for (let round = 0; round < 8 && !existsSync(dest); round++) {
      const mark = fake.requests.length;
      const run = start(opts);
      const trigger = (["time", "inside a range", "end of a range"] as const)[round % 3] as Trigger;
      const kill = (what: string) => {
        if (run.child.exitCode === null && run.child.signalCode === null && run.child.kill("SIGKILL")) {
          kills.push(what);
        }
      };
      // Counted from the first byte sent: the child takes a while to start.
      const ms = 50 + Math.floor(Math.random() * 1500);
      const nth = 1 + Math.floor(Math.random() * 6);
      const fraction = 0.05 + Math.random() * 0.9;
      let timer: NodeJS.Timeout | undefined;
      let ranges = 0;
      fake.onSent = (request, sent, total) => {
        if (request.server !== "storage" || fake!.requests.indexOf(request) < mark) return;
        if (sent <= 65536) ranges++;
        if (trigger === "time") timer ??= setTimeout(() => kill(`${ms} ms after the first byte`), ms);
        if (trigger === "inside a range" && ranges >= nth && sent >= fraction * total && sent < total) {
          kill(`${Math.round(fraction * 100)} % into range ${ranges}`);
        }
        if (trigger === "end of a range" && ranges >= nth && sent === total) kill(`as range ${ranges} ended`);
      };
      const { code, signal, stderr } = await run.exit;
      clearTimeout(timer);
      fake.onSent = undefined;
      expect(signal === "SIGKILL" || code === 0, stderr).toBe(true);

      // Nothing this run asked for was among the ranges the state file recorded before it started.
      for (const request of fake.requests.slice(mark).filter((r) => r.server === "storage")) {
        const [start, end] = span(request, content.length);
        for (const [s, e] of recorded) {
          expect(start < e && s < end, `${request.headers.range} fetches again ${s}-${e}`).toBe(false);
        }
      }
      // Under the final name there is the verified file or nothing.
      if (existsSync(dest)) expect(sha256(await readFile(dest))).toBe(digest);
      const statePath = `${dest}.part.json`;
      // The state is written by rename, so a kill never leaves half of it.
      recorded = existsSync(statePath) ? JSON.parse(await readFile(statePath, "utf8")).done : [];
    }
    console.log(`killed: ${kills.join("; ")}`);
    expect(kills.length).toBeGreaterThanOrEqual(3);

    const last = start(opts);
    const { code, stdout, stderr } = await last.exit;
    expect(code, stderr).toBe(0);
    expect(sha256(await readFile(dest))).toBe(digest);
    expect(await readdir(dir)).toEqual(["disk.qcow2"]);
    const { result } = JSON.parse(stdout.trim().split("\n").at(-1)!);
    expect(result.resumedFrom + result.fetchedBytes).toBe(content.length);
    expect(fake.requests.filter((r) => r.server === "storage" && r.headers.authorization)).toEqual([]);
  });
});

describe("a download's memory", () => {
  it("does not grow with the file", async () => {
    fake = await FakeGitHub.start({ token: TOKEN });
    dir = await mkdtemp(join(tmpdir(), "artifacts-memory-"));
    const peak = async (mib: number) => {
      const content = Buffer.alloc(mib * MiB, mib);
      fake!.addRelease(REPO, { tag: `v${mib}`, assets: [{ name: "disk.qcow2", content }] });
      const client = new GitHubClient({ apiUrl: fake!.apiUrl, token: TOKEN });
      const asset = (await client.releaseByTag(REPO, `v${mib}`)).assets[0]!;
      const dest = join(dir!, `${mib}.qcow2`);
      const { code, stdout, stderr } = await start({
        url: asset.url,
        dest,
        headers: { authorization: `Bearer ${TOKEN}`, accept: "application/octet-stream" },
        expectedSha256: asset.sha256,
      }).exit;
      expect(code, stderr).toBe(0);
      await rm(dest);
      return JSON.parse(stdout.trim().split("\n").at(-1)!).maxRssBytes as number;
    };
    const small = await peak(16);
    const large = await peak(256);
    // Holding the file (or a share of it) would add 240 MiB; the window and the buffers do not grow with it.
    expect(large - small).toBeLessThan(48 * MiB);
  });
});
