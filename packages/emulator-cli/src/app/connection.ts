import { PUBLISHABLE_KEY_NAME, SERVER_KEY_NAME } from "../contract/contract.js";
import type { Context } from "../core/context.js";
import { EmulatorError } from "../core/errors.js";
import { isSameProcess } from "../core/process-identity.js";
import { serviceUrl } from "../guest/health.js";
import { loadKeys } from "../guest/secrets.js";
import { shareConfigFile } from "../instance/commands.js";
import { type InstanceState, readState } from "../instance/instance-state.js";
import { type AppConnection, INTERNAL_PROJECT_ID } from "./app-env.js";
import { configFileIdentity, ensureConfigProject } from "./projects.js";

/** The running instance's recorded state; a stopped or vanished one is an error that says how to start it. */
export function runningState(ctx: Context): InstanceState {
  const state = readState(ctx.paths);
  if (state && isSameProcess(state.qemu)) return state;
  throw new EmulatorError(
    "NOT_RUNNING",
    `the emulator instance ${ctx.name} is not running`,
    `start it first: stack-emulator${ctx.name === "default" ? "" : ` --instance ${ctx.name}`} start`,
  );
}

/**
 * How an app reaches the running instance: the internal project with the keys in service, or with `configFile` the
 * project the backend keeps for that config file.
 */
export async function appConnection(ctx: Context, configFile?: string): Promise<AppConnection> {
  const state = runningState(ctx);
  const backend = state.services.find((s) => s.name === "backend");
  if (!backend) {
    throw new EmulatorError("NO_BACKEND", `the image ${state.image.name} has no service named backend`);
  }
  const keys = state.rotation === "rotated" ? loadKeys(ctx.paths.keys) : undefined;
  const publishableClientKey = keys?.[PUBLISHABLE_KEY_NAME];
  const secretServerKey = keys?.[SERVER_KEY_NAME];
  if (!publishableClientKey || !secretServerKey) {
    throw new EmulatorError(
      "NO_KEYS",
      state.rotation === "rotated"
        ? `the keys of the running instance are missing from ${ctx.paths.keys}`
        : "the instance runs with the image's public placeholder keys (EMULATOR_NO_ROTATION=1), which the host does not keep",
      "`stack-emulator stop --no-save && stack-emulator start` (without EMULATOR_NO_ROTATION) boots with fresh keys, keeping the data",
    );
  }
  const apiUrl = serviceUrl(backend, "");
  if (!configFile) {
    return { projectId: INTERNAL_PROJECT_ID, publishableClientKey, secretServerKey, apiUrl };
  }
  // The backend reads the file at /host<path>: it must be in the guest's share first.
  const file = configFileIdentity(configFile);
  await shareConfigFile(ctx, file);
  const project = await ensureConfigProject(apiUrl, publishableClientKey, file);
  return {
    projectId: project.project_id,
    publishableClientKey: project.publishable_client_key,
    secretServerKey: project.secret_server_key,
    apiUrl,
  };
}
