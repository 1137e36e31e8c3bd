import { QgaClient } from "@stack/qga";
import { appLogScript, GUEST } from "../contract/contract.js";
import { EmulatorError } from "../core/errors.js";
import type { InstancePaths } from "../core/paths.js";

/**
 * The app's own log, read in the running guest through its agent: the journal of `stack.service`, where the
 * container's output goes when the guest writes no host log (docs/guest-contract.md, section 9). The last `lines`.
 */
export async function readAppLog(paths: InstancePaths, lines: number): Promise<string> {
  const qga = await QgaClient.connect(paths.qgaSocket, { timeoutMs: 10_000 });
  try {
    const result = await qga.exec(
      { path: GUEST.shell, args: ["-c", appLogScript(lines)], captureOutput: true },
      { timeoutMs: 30_000 },
    );
    if (result.exitCode !== 0) {
      throw new EmulatorError(
        "GUEST_COMMAND_FAILED",
        `reading the app's log in the guest failed: ${result.stderr.toString().trim() || `exit ${result.exitCode}`}`,
        "the image may keep it elsewhere; `stack-emulator logs --serial` shows the console",
      );
    }
    return result.stdout.toString();
  } finally {
    await qga.close().catch(() => undefined);
  }
}

/** The lines of `next` that follow what `previous` ended with: what a follower has not printed yet. */
export function newLines(previous: string[], next: string[]): string[] {
  for (let overlap = Math.min(previous.length, next.length); overlap > 0; overlap--) {
    const tail = previous.slice(previous.length - overlap);
    if (tail.every((line, i) => line === next[i])) return next.slice(overlap);
  }
  return next;
}
