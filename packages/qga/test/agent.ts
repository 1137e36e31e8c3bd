import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";

export interface Agent {
  dir: string;
  socketPath: string;
  /** Resolves once the agent listens on its socket; rejects with its stderr if it exits first or takes too long. */
  ready: Promise<void>;
  /** SIGSTOP: the agent keeps its socket but answers nothing until resumed. */
  pause(): void;
  resume(): void;
  /**
   * Ends the agent (SIGTERM by default; SIGKILL ends it even while paused, before it can answer anything). An agent
   * still there after STOP_GRACE_MS gets SIGKILL: no test may wait forever on a stuck process.
   */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/**
 * Starts a real qemu-ga on the host, listening on a unix socket in a fresh short directory under /tmp (socket
 * paths are limited to 108 bytes). As root, CAP_SYS_TIME is dropped from its bounding set so that no
 * guest-set-time a test sends can ever change the host's clock.
 */
/** Both bounds are far above what a healthy agent needs, even on a loaded 2-core machine. */
const READY_DEADLINE_MS = 10_000;
const STOP_GRACE_MS = 3_000;

export async function spawnAgent(opts: { blockRpcs?: string[] } = {}): Promise<Agent> {
  const dir = await mkdtemp("/tmp/qga-");
  const socketPath = `${dir}/s`;
  const agentArgs = ["-m", "unix-listen", "-p", socketPath, "-t", dir, "-f", `${dir}/pid`];
  if (opts.blockRpcs) agentArgs.push("-b", opts.blockRpcs.join(","));
  const [command, args] =
    process.getuid?.() === 0
      ? ["setpriv", ["--bounding-set", "-sys_time", "qemu-ga", ...agentArgs]]
      : ["qemu-ga", agentArgs];
  const child: ChildProcess = spawn(command as string, args as string[], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr?.on("data", (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-4096);
  });
  const exited = new Promise<number | null>((resolve) => {
    child.once("exit", (code) => resolve(code));
    child.once("error", () => resolve(null));
  });
  const ready = (async () => {
    let running = true;
    void exited.then(() => {
      running = false;
    });
    let delay = 2;
    const deadline = Date.now() + READY_DEADLINE_MS;
    while (running) {
      if (Date.now() > deadline) {
        throw new Error(`qemu-ga did not listen on ${socketPath} within ${READY_DEADLINE_MS} ms: ${stderr}`);
      }
      if (
        await stat(socketPath).then(
          (s) => s.isSocket(),
          () => false,
        )
      )
        return;
      await sleep(delay);
      delay = Math.min(delay * 2, 100);
    }
    throw new Error(`qemu-ga exited before listening on ${socketPath}: ${stderr}`);
  })();
  ready.catch(() => undefined);
  return {
    dir,
    socketPath,
    ready,
    pause: () => child.kill("SIGSTOP"),
    resume: () => child.kill("SIGCONT"),
    async stop(signal = "SIGTERM") {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill(signal);
        child.kill("SIGCONT");
      }
      const escalate = setTimeout(() => child.kill("SIGKILL"), STOP_GRACE_MS);
      await exited;
      clearTimeout(escalate);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** A started agent; one that does not come up in time is replaced once. (A CI run saw a test here wait out its
 * 60 s timeout; spawning and stopping the agent were the only waits without a bound.) */
export async function startAgent(opts: { blockRpcs?: string[] } = {}): Promise<Agent> {
  for (let attempt = 1; ; attempt++) {
    const agent = await spawnAgent(opts);
    try {
      await agent.ready;
      return agent;
    } catch (error) {
      await agent.stop("SIGKILL");
      if (attempt >= 2 || !String(error).includes("did not listen")) throw error;
    }
  }
}
