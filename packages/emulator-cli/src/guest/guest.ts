import type { ExecResult, QgaClient } from "@stack/qga";
import {
  GUEST,
  PLACEHOLDER_PUBLISHABLE_KEY,
  REAPPLY_CONFIG_SCRIPT,
  SECRET_NAMES,
} from "../contract/contract.js";
import { timeoutMsFromEnv } from "../core/context.js";
import { EmulatorError } from "../core/errors.js";
import { isSameProcess } from "../core/process-identity.js";
import type { BootInputs } from "../instance/boot-inputs.js";
import { coldBootTimeoutMs } from "../instance/cold-boot.js";
import type { Rotation } from "../instance/instance-state.js";
import { type LiveVm, withAgent } from "../vm/live-vm.js";
import { waitHealthy } from "./health.js";
import { forgetKeys, formatEnv, generateSecrets, saveKeys, saveServedPublishableKey } from "./secrets.js";

/**
 * How long the guest's own work may take: a command through the agent, or its services' health after a resume. The
 * image may set it (a systemd guest under TCG needs minutes where the dev image needs seconds); the user may
 * override it, with the original's EMULATOR_SNAPSHOT_READY_TIMEOUT too; 45 s otherwise, as there.
 */
function guestTimeoutMs(inputs: BootInputs): number {
  const fromImage = inputs.image.manifest.timeoutSeconds;
  const imageMs = typeof fromImage === "number" && fromImage > 0 ? fromImage * 1000 : 45_000;
  return timeoutMsFromEnv(
    inputs.ctx.env,
    ["STACK_EMULATOR_GUEST_TIMEOUT", "EMULATOR_SNAPSHOT_READY_TIMEOUT"],
    imageMs,
  );
}

async function guestShell(inputs: BootInputs, qga: QgaClient, script: string, what: string): Promise<void> {
  const result = await qga.exec(
    { path: GUEST.shell, args: ["-c", script], captureOutput: true },
    { timeoutMs: guestTimeoutMs(inputs) },
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
export async function rotateSecrets(
  inputs: BootInputs,
  qga: QgaClient,
  whileStarting?: () => Promise<void>,
): Promise<Rotation> {
  const { report, paths } = inputs.ctx;
  if (inputs.noRotation) {
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
    { timeoutMs: guestTimeoutMs(inputs) },
  );
  // The guest starts the rotation program meanwhile, so the agent's hwclock run (set-time) no longer delays it.
  // Not a guarantee of order: the clock is set a few milliseconds into the program's start, while a restart of the
  // app comes after validating and storing the secrets, far later.
  await whileStarting?.();
  checkGuestExit(await qga.waitForExit(pid, { timeoutMs: guestTimeoutMs(inputs) }), "secret rotation");
  saveKeys(paths, secrets);
  report.mark("secrets rotated");
  return "rotated";
}

/** Waits until every service answers healthy; UNHEALTHY with each failing service when it does not in time. */
export async function waitServices(
  inputs: BootInputs,
  vm: LiveVm,
  timeoutMs: number,
  what: string,
): Promise<void> {
  const { ctx } = inputs;
  const result = await waitHealthy(inputs.services, {
    timeoutMs,
    stillRunning: () => isSameProcess(vm.identity),
  });
  ctx.report.mark(`${what}: services answered`);
  if (!result.healthy) {
    const failing = result.results
      .filter((r) => !r.healthy)
      .map((r) => `${r.name} ${r.url}: ${r.status ?? r.error}`)
      .join("; ");
    throw new EmulatorError(
      "UNHEALTHY",
      `${what}: services not healthy within ${Math.round(timeoutMs / 1000)} s (${failing})`,
      `see \`stack-emulator logs\` (${ctx.paths.serialLog})`,
    );
  }
}

async function setGuestClock(inputs: BootInputs, qga: QgaClient): Promise<void> {
  await qga.setTime(new Date());
  inputs.ctx.report.mark("guest clock set");
}

/** A freshly booted guest: this install's keys, then health (the rotation restarts the app). */
export async function settleBootedGuest(inputs: BootInputs, vm: LiveVm): Promise<Rotation> {
  const rotation = await withAgent(inputs.ctx, vm, (qga) => rotateSecrets(inputs, qga));
  inputs.ctx.report.step("waiting for the restarted app");
  await waitServices(inputs, vm, Math.max(60_000, guestTimeoutMs(inputs)), "after rotation");
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
  inputs: BootInputs,
  vm: LiveVm,
  savedConfigHash: string,
  options: { rotate: boolean; what: string },
): Promise<Rotation | undefined> {
  const configChanged = savedConfigHash !== inputs.configHash;
  const rotate = options.rotate || configChanged;
  if (configChanged) {
    await withAgent(inputs.ctx, vm, async (qga) => {
      // The clock is set before anything restarts the app: not with the time of the save.
      await setGuestClock(inputs, qga);
      inputs.ctx.report.step("restarting the app with the changed runtime config (stack.service)");
      await guestShell(inputs, qga, REAPPLY_CONFIG_SCRIPT, "applying the runtime config");
    });
    // A whole app starting again, as at boot.
    await waitServices(inputs, vm, coldBootTimeoutMs(inputs.ctx.env), `${options.what}, new runtime config`);
  }
  const agentWork = withAgent(inputs.ctx, vm, async (qga) => {
    if (configChanged) return rotate ? rotateSecrets(inputs, qga) : undefined;
    if (rotate) return rotateSecrets(inputs, qga, () => setGuestClock(inputs, qga));
    await setGuestClock(inputs, qga);
    return undefined;
  });
  const restartsApp = rotate && !inputs.noRotation;
  if (restartsApp) {
    const rotation = await agentWork;
    // On a large guest this is seconds: the app's processes start again from nothing.
    inputs.ctx.report.step("waiting for the restarted app");
    await waitServices(inputs, vm, guestTimeoutMs(inputs), options.what);
    return rotation;
  }
  const [rotation] = await Promise.all([
    agentWork,
    waitServices(inputs, vm, guestTimeoutMs(inputs), options.what),
  ]);
  return rotation;
}
