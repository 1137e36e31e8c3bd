import { createInterface } from "node:readline/promises";
import type { Command } from "commander";
import { composeAppEnv } from "../../app/app-env.js";
import { childCommand, runChild, shieldedFromSignals } from "../../app/run-child.js";
import { type EmulatorError, isEmulatorError } from "../../core/errors.js";
import { serviceUrl } from "../../guest/health.js";
import { keysFileInUse } from "../../guest/secrets.js";
import { chooseImage, type ResolvedImage, resolveImage } from "../../image/choose.js";
import type { DownloadReport } from "../../image/download-report.js";
import { type ImageSelector, writeCurrentImage } from "../../image/image-store.js";
import type { StartResult } from "../../instance/lifecycle.js";
import { type Invocation, type Io, invocation, output, printJson } from "../io.js";
import { startOptions } from "../options.js";
import type { SettingsFlags } from "../settings.js";

interface StartFlags extends SettingsFlags {
  configFile?: string;
}

/** On a terminal, a missing image becomes a question instead of a dead end. */
async function offerDevImage(io: Io, error: EmulatorError): Promise<boolean> {
  if (!io.stdin.isTTY || !io.stderr.isTTY) return false;
  const rl = createInterface({ input: io.stdin, output: io.stderr });
  try {
    const answer = await rl.question(`${error.message}\nStart the offline dev image instead? [Y/n] `);
    return /^(y|yes|)$/i.test(answer.trim());
  } finally {
    rl.close();
  }
}

/**
 * The running instance, or a start like `stack-emulator start`: image, host ports (auto ones recorded), boot. With
 * what was downloaded when the image had to be pulled first.
 */
async function ensureStarted(
  io: Io,
  call: Invocation,
  flags: StartFlags,
): Promise<StartResult & { download?: DownloadReport }> {
  const { instance, report } = call;
  // Serving as it should: nothing to do. A running instance that does not serve is the start's to recover.
  const { status, state } = await instance.inspect({ probe: true });
  if (status === "running" && state) {
    if (flags.ports) report.info("already running: --ports applies from the next start");
    return { alreadyRunning: true, state };
  }
  const choice = chooseImage(call.settings);
  let selector: ImageSelector = choice.selector;
  let resolved: ResolvedImage;
  try {
    resolved = await resolveImage(instance.ctx, choice);
  } catch (error) {
    if (!isEmulatorError(error, "NO_IMAGE") || call.json || !(await offerDevImage(io, error))) throw error;
    selector = { kind: "dev" };
    resolved = await resolveImage(instance.ctx, { ...choice, selector });
  }
  const { image, download } = resolved;
  report.mark("image found");
  const result = await instance.start(image, selector);
  writeCurrentImage(call.settings.layout, selector, image.manifest.arch);
  return { ...result, ...(download ? { download } : {}) };
}

export function registerStart(program: Command, io: Io): void {
  startOptions(
    program
      .command("start")
      .description("start the emulator: resume its snapshot, or cold boot and capture one the first time")
      // `pnpm --filter emulator-cli start -- --help` lands here: point at the rest of the CLI too.
      .addHelpText(
        "after",
        `
With --config-file, stdout is the config file's project as JSON: {project_id, publishable_client_key,
secret_server_key}.

Other commands: stop, status, reset, run, env, list, logs, doctor, pull, capture, list-releases.
Run \`stack-emulator --help\` (or \`pnpm --filter emulator-cli stack-emulator --help\`) for all of them.`,
      ),
  ).action(async (flags: StartFlags, command: Command) => {
    const call = invocation(io, command, flags);
    const result = await ensureStarted(io, call, flags);
    const { state } = result;
    if (flags.configFile) {
      const connection = await call.instance.connection(flags.configFile);
      printJson(io, {
        project_id: connection.projectId,
        publishable_client_key: connection.publishableClientKey,
        secret_server_key: connection.secretServerKey,
      });
      return;
    }
    const keysFile = keysFileInUse(call.instance.paths.keys, state.rotation);
    output(
      io,
      call.json,
      {
        alreadyRunning: result.alreadyRunning,
        ...state,
        ...(keysFile ? { keysFile } : {}),
        ...(result.download ? { download: result.download } : {}),
      },
      () =>
        [
          result.alreadyRunning
            ? `already running (pid ${state.qemu.pid})`
            : `ready in ${(state.readyMs / 1000).toFixed(2)} s (${state.boot === "cold" ? "cold boot" : `${state.boot} resume`}, ${state.accel})`,
          ...state.services.map((s) => `  ${s.name.padEnd(10)} ${serviceUrl(s, "")}`),
          keysFile ? `  keys       ${keysFile}` : "  keys       PUBLIC placeholders (rotation skipped)",
        ].join("\n"),
    );
  });

  startOptions(
    program
      .command("run")
      .description(
        "run a command with the emulator's project, keys and URL in its environment; starts the emulator if needed",
      )
      .argument("[command...]", 'a shell string ("npm run dev"), or after -- a program and its arguments')
      .addHelpText(
        "after",
        `
The command gets STACK_PROJECT_ID, STACK_PUBLISHABLE_CLIENT_KEY and STACK_API_URL, each also with the prefixes
NEXT_PUBLIC_, VITE_ and EXPO_PUBLIC_ (NEXT_PUBLIC_STACK_PROJECT_ID, ...), and STACK_SECRET_SERVER_KEY (never with a
public prefix). SIGINT, SIGTERM and SIGHUP are passed to it; run exits with its exit code (128 + the signal's number
when a signal ended it). An emulator that run started is stopped afterwards, its state saved as by \`stop\`; one that
was already running keeps running.

Examples:
  stack-emulator run "npm run dev"                      through /bin/sh -c
  stack-emulator run -- node server.js --port 3000      no shell: arguments passed as they are
  stack-emulator run --config-file ./stack.config.ts -- npm test`,
      ),
  ).action(async (operands: string[], flags: StartFlags, command: Command) => {
    const call = invocation(io, command, flags);
    // Commander drops the "--" it ends the options with; whether there was one decides shell or not.
    const child = childCommand(operands, io.argv.slice(io.argv.indexOf("run") + 1).includes("--"));
    const result = await ensureStarted(io, { ...call, json: false }, flags);
    try {
      const connection = await call.instance.connection(flags.configFile);
      call.report.info(`running with the emulator at ${connection.apiUrl} (project ${connection.projectId})`);
      io.exitCode = await runChild(child, { ...io.env, ...composeAppEnv(connection) });
    } finally {
      if (!result.alreadyRunning) {
        await shieldedFromSignals(
          () => call.instance.stop("save"),
          () => call.report.info("saving the emulator's state first; it stops in a moment"),
        );
      }
    }
  });
}
