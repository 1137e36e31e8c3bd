import { type ExecResult, type QgaClient, QgaError } from "@stack/qga";
import {
  GUEST,
  PLACEHOLDER_PUBLISHABLE_KEY,
  REAPPLY_CONFIG_SCRIPT,
  SECRET_NAMES,
} from "../contract/contract.js";
import { describeFreeSpace } from "../core/disk-space.js";
import { EmulatorError } from "../core/errors.js";
import type { InstancePaths } from "../core/paths.js";
import type { Reporter } from "../core/report.js";
import type { Vm } from "../vm/vm.js";
import { waitHealthy } from "./health.js";
import {
  forgetKeys,
  formatEnv,
  generateSecrets,
  type Rotation,
  saveKeys,
  saveServedPublishableKey,
} from "./secrets.js";

/** What the guest's side of a boot needs: the VM (its services on the ports it forwards now), where the keys go, how long. */
export interface GuestWork {
  vm: Vm;
  report: Reporter;
  paths: InstancePaths;
  /** A guest command (rotation) and the health after a resume. */
  guestTimeoutMs: number;
  /** A whole app starting again, as at boot. */
  bootTimeoutMs: number;
  /** EMULATOR_NO_ROTATION: keep the image's public placeholder keys. */
  noRotation: boolean;
}

/**
 * The guest agent's timeouts in the words of the settings that lengthen them: the agent library speaks of its own
 * options, which mean nothing to a user of the CLI.
 */
function inSettingsTerms(error: unknown, work: GuestWork): unknown {
  if (!(error instanceof QgaError)) return error;
  const seconds = (ms: number) => Math.round(ms / 1000);
  if (error.code === "AGENT_UNRESPONSIVE") {
    return new EmulatorError(
      "AGENT_TIMEOUT",
      "the guest agent did not answer in time",
      "a slow host may need longer: STACK_EMULATOR_AGENT_TIMEOUT=<seconds> after a resume, STACK_EMULATOR_BOOT_TIMEOUT for a cold boot",
      { cause: error },
    );
  }
  if (error.code === "TIMEOUT") {
    return new EmulatorError(
      "AGENT_TIMEOUT",
      `a command in the guest did not finish within ${seconds(work.guestTimeoutMs)} s`,
      "a slow host may need longer: STACK_EMULATOR_GUEST_TIMEOUT=<seconds>",
      { cause: error },
    );
  }
  return error;
}

/** The VM's guest agent for `fn`, its failures said in the CLI's terms. */
async function withGuestAgent<T>(work: GuestWork, fn: (qga: QgaClient) => Promise<T>): Promise<T> {
  try {
    return await work.vm.withAgent(fn);
  } catch (error) {
    throw inSettingsTerms(error, work);
  }
}

async function guestShell(work: GuestWork, qga: QgaClient, script: string, what: string): Promise<void> {
  const result = await qga.exec(
    { path: GUEST.shell, args: ["-c", script], captureOutput: true },
    { timeoutMs: work.guestTimeoutMs },
  );
  checkGuestExit(result, what);
}

function checkGuestExit(result: ExecResult, what: string): void {
  if (result.exitCode !== 0) {
    const detail =
      result.stderr.toString().trim() || result.stdout.toString().trim() || `signal ${result.signal}`;
    throw new EmulatorError(
      "GUEST_COMMAND_FAILED",
      `${what} failed in the guest (exit ${result.exitCode ?? "-"}): ${detail}`,
    );
  }
}

/**
 * Fresh keys for this install: generated here, handed to the guest on stdin through the agent, and saved on the
 * host only once the guest has accepted them. `whileStarting` runs while the guest starts the rotation program.
 */
async function rotateSecrets(
  work: GuestWork,
  qga: QgaClient,
  whileStarting?: () => Promise<void>,
): Promise<Rotation> {
  const { report, paths } = work;
  if (work.noRotation) {
    report.warn(
      "EMULATOR_NO_ROTATION=1: the emulator keeps the PUBLIC placeholder keys baked into the image. Anyone can use them. Never expose these ports.",
    );
    await whileStarting?.();
    // Keys from an earlier start no longer describe this guest: it serves the placeholders, which the original's
    // CLI reads from internal-pck like any other key in service.
    forgetKeys(paths);
    saveServedPublishableKey(paths, PLACEHOLDER_PUBLISHABLE_KEY);
    return "skipped";
  }
  report.step("rotating secrets through the guest agent");
  const secrets = generateSecrets(SECRET_NAMES);
  const pid = await qga.spawn(
    { path: GUEST.rotateSecrets, captureOutput: true, stdin: formatEnv(secrets) },
    { timeoutMs: work.guestTimeoutMs },
  );
  // The guest starts the rotation program meanwhile, so the agent's hwclock run (set-time) no longer delays it.
  // Not a guarantee of order: the clock is set a few milliseconds into the program's start, while a restart of the
  // app comes after validating and storing the secrets, far later.
  await whileStarting?.();
  checkGuestExit(await qga.waitForExit(pid, { timeoutMs: work.guestTimeoutMs }), "secret rotation");
  saveKeys(paths, secrets);
  report.mark("secrets rotated");
  return "rotated";
}

/** Waits until every service answers healthy; UNHEALTHY with each failing service when it does not in time. */
export async function waitServices(work: GuestWork, timeoutMs: number, what: string): Promise<void> {
  const result = await waitHealthy(work.vm.forwards, { timeoutMs, stillRunning: () => work.vm.alive });
  work.report.mark(`${what}: services answered`);
  if (!result.healthy) {
    const status = await work.vm.qmp.queryStatus().catch(() => undefined);
    if (status?.status === "io-error") {
      throw new EmulatorError(
        "NO_SPACE",
        `${what}: the VM paused on a failed disk write: ${describeFreeSpace(work.paths.dir)}`,
        "free space there (or set STACK_EMULATOR_HOME to a disk with room) and start again",
      );
    }
    const failing = result.results
      .filter((r) => !r.healthy)
      .map((r) => `${r.name} ${r.url}: ${r.status ?? r.error}`)
      .join("; ");
    throw new EmulatorError(
      "UNHEALTHY",
      `${what}: services not healthy within ${Math.round(timeoutMs / 1000)} s (${failing})`,
      `see \`stack-emulator logs\` (${work.paths.serialLog})`,
    );
  }
}

async function setGuestClock(work: GuestWork, qga: QgaClient): Promise<void> {
  await qga.setTime(new Date());
  work.report.mark("guest clock set");
}

/** A freshly booted guest: this install's keys, then health (the rotation restarts the app). */
export async function settleBootedGuest(work: GuestWork): Promise<Rotation> {
  const rotation = await withGuestAgent(work, (qga) => rotateSecrets(work, qga));
  work.report.step("waiting for the restarted app");
  await waitServices(work, Math.max(60_000, work.guestTimeoutMs), "after rotation");
  return rotation;
}

/**
 * A restored guest's clock, runtime config and (when `rotate`) secrets, then its health. When nothing in that
 * restarts the app (no rotation, same config) the health check runs alongside the agent's work, not after it.
 *
 * Another runtime config (other host ports than the guest was started with) restarts the app through the image's
 * own `stack.service`, which renders the new config; the restarted app is back on the image's placeholder keys, so
 * it is rotated afterwards, once healthy, whatever the saved guest held before.
 */
export async function settleResumedGuest(
  work: GuestWork,
  options: { rotate: boolean; configChanged: boolean; what: string },
): Promise<Rotation | undefined> {
  const { configChanged } = options;
  const rotate = options.rotate || configChanged;
  if (configChanged) {
    await withGuestAgent(work, async (qga) => {
      // The clock is set before anything restarts the app: not with the time of the save.
      await setGuestClock(work, qga);
      work.report.step("restarting the app with the changed runtime config (stack.service)");
      await guestShell(work, qga, REAPPLY_CONFIG_SCRIPT, "applying the runtime config");
    });
    await waitServices(work, work.bootTimeoutMs, `${options.what}, new runtime config`);
  }
  const agentWork = withGuestAgent(work, async (qga) => {
    if (configChanged) return rotate ? rotateSecrets(work, qga) : undefined;
    if (rotate) return rotateSecrets(work, qga, () => setGuestClock(work, qga));
    await setGuestClock(work, qga);
    return undefined;
  });
  if (rotate && !work.noRotation) {
    const rotation = await agentWork;
    // On a large guest this is seconds: the app's processes start again from nothing.
    work.report.step("waiting for the restarted app");
    await waitServices(work, work.guestTimeoutMs, options.what);
    return rotation;
  }
  const [rotation] = await Promise.all([agentWork, waitServices(work, work.guestTimeoutMs, options.what)]);
  return rotation;
}
