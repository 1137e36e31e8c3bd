// Interrupting the CLI at a named step, and checking what an interrupted command may leave behind.
import { spawn } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { expect } from "vitest";
import { internalClientHeaders } from "../src/contract/contract.js";
import { CLI, type Instance, keysOf, placeholderPublishableKey, runCli } from "./helpers.js";

export type Interruption = NodeJS.Signals | "EPIPE";

export interface Interrupted {
  /** Whether the step was reached (and the interruption sent). */
  reached: boolean;
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
}

/**
 * Runs the CLI with its trace on and interrupts it `delayMs` after a line of its output matches `at`: a signal
 * (SIGKILL is a kill -9 no handler sees), or `EPIPE`: its output closed, as `start 2>&1 | head -1` does.
 */
export function interruptAt(
  args: string[],
  env: NodeJS.ProcessEnv,
  at: RegExp,
  how: Interruption,
  delayMs = 0,
): Promise<Interrupted> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      env: { ...env, STACK_EMULATOR_TRACE: "1" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stderr = "";
    let reached = false;
    const interrupt = () => {
      if (how === "EPIPE") {
        child.stdout.destroy();
        child.stderr.destroy();
      } else child.kill(how);
    };
    const reach = () => {
      if (reached) return;
      reached = true;
      setTimeout(interrupt, delayMs);
    };
    child.stdout.on("data", () => undefined);
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
      if (at.test(stderr)) reach();
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), 600_000);
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolvePromise({ reached, code, signal, stderr });
    });
  });
}

/** The QEMU processes of this home: a clean state has one per running instance, never an orphan. */
export function qemusOf(home: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, "utf8");
      if (cmdline.includes("qemu-system") && cmdline.includes(home)) pids.push(Number(entry));
    } catch {
      // Gone meanwhile.
    }
  }
  return pids;
}

/** The backend's answer on the user's port to the image's public key: anything but 200 is right. */
export async function placeholderAnswer(backendPort: number): Promise<number | "refused"> {
  try {
    const res = await fetch(`http://127.0.0.1:${backendPort}/api/v1/projects/current`, {
      headers: internalClientHeaders(placeholderPublishableKey()),
      signal: AbortSignal.timeout(5000),
    });
    await res.arrayBuffer();
    return res.status;
  } catch {
    return "refused";
  }
}

const kvUrl = (inst: Instance, name: string) => `http://127.0.0.1:${inst.backend}/api/v1/kv/${name}`;

export async function putValue(inst: Instance, name: string, value: string): Promise<void> {
  const res = await fetch(kvUrl(inst, name), {
    method: "POST",
    body: value,
    headers: internalClientHeaders(keysOf(inst).STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY as string),
  });
  expect(res.status).toBe(200);
}

export async function getValue(inst: Instance, name: string): Promise<string> {
  const res = await fetch(kvUrl(inst, name), {
    headers: internalClientHeaders(keysOf(inst).STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY as string),
  });
  return res.status === 200 ? res.text() : `HTTP ${res.status}`;
}

/**
 * What must hold after any interruption: nothing on the user's port takes the public key; the next `status` and
 * `start` work by themselves, with one QEMU and this install's keys; data written before the last successful stop
 * is still there.
 */
export async function expectRecovered(inst: Instance, kept?: { name: string; value: string }): Promise<void> {
  expect(await placeholderAnswer(inst.backend)).not.toBe(200);
  const status = await runCli(["status", "--json"], inst.env);
  expect([0, 1, 3], status.stderr).toContain(status.code);
  expect(status.json, status.stdout).toBeDefined();
  const started = await runCli(["start", "--json"], inst.env);
  expect(started.code, started.stderr).toBe(0);
  expect(qemusOf(inst.home)).toHaveLength(1);
  expect(await placeholderAnswer(inst.backend)).not.toBe(200);
  if (kept) expect(await getValue(inst, kept.name)).toBe(kept.value);
  const again = await runCli(["status", "--json"], inst.env);
  expect(again.code, again.stderr).toBe(0);
  expect(again.json.state).toBe("running");
}
