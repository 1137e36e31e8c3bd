import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { afterAll } from "vitest";
import { run } from "../src/cli/run.js";

/** The CLI run in this process against captured streams, as the bin runs it against the process's own. */
export async function inProcessCli(args: string[], env: NodeJS.ProcessEnv) {
  const stdout = new PassThrough();
  const stderr = new PassThrough() as unknown as NodeJS.WriteStream;
  let out = "";
  let err = "";
  stdout.on("data", (d: Buffer) => {
    out += d.toString();
  });
  (stderr as unknown as PassThrough).on("data", (d: Buffer) => {
    err += d.toString();
  });
  const code = await run(["node", "stack-emulator", ...args], {
    stdout,
    stderr,
    stdin: new PassThrough() as unknown as NodeJS.ReadStream,
    env,
  });
  let json: unknown;
  try {
    json = JSON.parse(out);
  } catch {
    json = undefined;
  }
  // biome-ignore lint/suspicious/noExplicitAny: parsed JSON output of the CLI under test
  return { code, stdout: out, stderr: err, json: json as any };
}

const homes: string[] = [];
afterAll(() => {
  for (const home of homes) rmSync(home, { recursive: true, force: true });
});

/** The environment of a fresh home, removed after the file's tests. */
export function inProcessHome(): NodeJS.ProcessEnv {
  const dir = mkdtempSync(join(tmpdir(), "se-inproc-"));
  homes.push(dir);
  return { PATH: process.env.PATH, STACK_EMULATOR_HOME: dir, CI: "1" };
}
