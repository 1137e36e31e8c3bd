import { INTERNAL_PROJECT_ID, PUBLISHABLE_KEY_NAME, SERVER_KEY_NAME } from "../contract/contract.js";
import type { Context } from "../core/context.js";
import { EmulatorError } from "../core/errors.js";
import { configFileIdentity, ensureConfigProject } from "../guest/backend.js";
import { serviceUrl } from "../guest/health.js";
import { loadKeys } from "../guest/secrets.js";
import { addSharedFile } from "../guest/share.js";
import { connectQmp } from "../vm/qemu-process.js";
import { inspectInstance } from "./inspect.js";
import { type InstanceState, writeState } from "./instance-state.js";
import { locked } from "./lifecycle.js";
import { attachShare } from "./share-attach.js";

/** What an app needs to talk to the emulator's backend as one project. */
export interface AppConnection {
  projectId: string;
  publishableClientKey: string;
  secretServerKey: string;
  apiUrl: string;
}

function notRunning(ctx: Context): EmulatorError {
  return new EmulatorError(
    "NOT_RUNNING",
    `the emulator instance ${ctx.name} is not running`,
    `start it first: stack-emulator${ctx.name === "default" ? "" : ` --instance ${ctx.name}`} start`,
  );
}

/** The running instance's recorded state; a stopped or vanished one is an error that says how to start it. */
export async function runningState(ctx: Context): Promise<InstanceState> {
  const { state } = await inspectInstance(ctx);
  if (!state) throw notRunning(ctx);
  return state;
}

/** Shares a config file with the running instance, so that its backend finds it at /host<path>. */
export async function shareConfigFile(ctx: Context, file: string): Promise<void> {
  await locked(ctx, "share", async () => {
    const state = await runningState(ctx);
    addSharedFile(ctx.paths, file);
    const qmp = await connectQmp(ctx.paths, 5000);
    try {
      const plugged = await attachShare(ctx, qmp, state.qemu, Boolean(state.shareDevice));
      if (plugged !== Boolean(state.shareDevice)) writeState(ctx.paths, { ...state, shareDevice: plugged });
    } finally {
      await qmp.close().catch(() => undefined);
    }
  });
}

/**
 * How an app reaches the running instance: the internal project with the keys in service, or with `configFile` the
 * project the backend keeps for that config file.
 */
export async function appConnection(ctx: Context, configFile?: string): Promise<AppConnection> {
  const state = await runningState(ctx);
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
