#!/usr/bin/env node
import { createReadStream, existsSync, readFileSync, statSync, watch } from "node:fs";
import { dirname } from "node:path";
import { createInterface } from "node:readline/promises";
import type { DoctorCheck } from "@stack/host-detect";
import { Command, Option } from "commander";
import { composeAppEnv, formatDotenv, PREFIX_SETS, parsePrefixSet } from "../app/app-env.js";
import { appConnection } from "../app/connection.js";
import { childCommand, runChild, shieldedFromSignals } from "../app/run-child.js";
import { contractServices, portPrefix } from "../contract/contract.js";
import { type Context, choiceFromEnv, createContext } from "../core/context.js";
import { describeError, EmulatorError, exitCodeFor, isEmulatorError } from "../core/errors.js";
import { packageFile } from "../core/package-files.js";
import { resolveHome, validateInstanceName } from "../core/paths.js";
import { isSameProcess } from "../core/process-identity.js";
import { createReporter } from "../core/report.js";
import { newLines, readAppLog } from "../guest/app-log.js";
import { serviceUrl } from "../guest/health.js";
import { keysFileInUse } from "../guest/secrets.js";
import { hostDoctor } from "../host/host.js";
import { type Image, loadImage, withMachineSettings } from "../image/image.js";
import {
  archOf,
  describeSelector,
  ensureDevImage,
  type ImageSelector,
  type PullFlags,
  parseImageSelector,
  readCurrentImage,
  selectorFromFlags,
  storedImage,
  writeCurrentImage,
} from "../image/image-store.js";
import { capture, reset, type StartResult, start, stop } from "../instance/commands.js";
import { readState } from "../instance/instance-state.js";
import { listInstances, reservedPorts, stopAll } from "../instance/instances.js";
import { assignPorts, parsePortsMode } from "../instance/port-assignment.js";
import { runShareSync } from "../instance/share-sync.js";
import { status } from "../instance/status.js";

interface GlobalOptions {
  json?: boolean;
  instance: string;
}

function context(command: Command): { ctx: Context; json: boolean } {
  const opts = command.optsWithGlobals<GlobalOptions>();
  const json = Boolean(opts.json);
  const report = createReporter({ quiet: json && !process.stderr.isTTY });
  report.mark("command line parsed");
  return {
    ctx: createContext(resolveHome(), validateInstanceName(opts.instance), process.env, report),
    json,
  };
}

function printJson(data: unknown): void {
  process.stdout.write(`${JSON.stringify(data, null, 2)}\n`);
}

function output(json: boolean, data: unknown, human: () => string): void {
  if (json) printJson(data);
  else process.stdout.write(`${human()}\n`);
}

/** The image a selector names, with the guest's RAM and vCPUs as EMULATOR_RAM and EMULATOR_CPUS set them. */
async function resolveImage(
  ctx: Context,
  selector: ImageSelector,
  flags: PullFlags,
  rebuild = false,
): Promise<Image> {
  return withMachineSettings(await findImage(ctx, selector, flags, rebuild), ctx.env);
}

async function findImage(
  ctx: Context,
  selector: ImageSelector,
  flags: PullFlags,
  rebuild: boolean,
): Promise<Image> {
  switch (selector.kind) {
    case "dev":
      return ensureDevImage(ctx.layout, ctx.env, {
        arch: archOf(flags),
        rebuild,
        onBuild: () => ctx.report.step("building the dev image from Debian packages (cached by content)"),
      });
    case "path":
      return loadImage(selector.path);
    default:
      return storedImage(ctx.layout, selector, flags) ?? (await pull(ctx, selector, flags));
  }
}

/** The download code (undici and friends) is loaded only by commands that download. */
async function pull(ctx: Context, selector: ImageSelector, flags: PullFlags): Promise<Image> {
  const { pullImage } = await import("../image/pull.js");
  return pullImage(ctx, selector, flags);
}

/** The image to use, and the flags to find it with: the last image's architecture unless --arch says otherwise. */
function chooseImage<F extends PullFlags & { image?: string }>(
  ctx: Context,
  given: F,
): { selector: ImageSelector; flags: F } {
  const envArch = choiceFromEnv(ctx.env, "EMULATOR_ARCH", {
    choices: ["amd64", "arm64"],
    isNot: "a guest architecture",
    unsetMeans: "use the host's (or the last image's)",
  });
  const flags = given.arch || !envArch ? given : { ...given, arch: envArch };
  const explicit = flags.image ?? ctx.env.STACK_EMULATOR_IMAGE;
  if (explicit) return { selector: parseImageSelector(explicit), flags };
  const fromFlags = selectorFromFlags(flags);
  if (fromFlags) return { selector: fromFlags, flags };
  const current = readCurrentImage(ctx.layout);
  if (current) {
    return {
      selector: parseImageSelector(current.selector),
      flags: { ...flags, arch: flags.arch ?? current.arch },
    };
  }
  return { selector: { kind: "release" }, flags };
}

const program = new Command("stack-emulator")
  .description(
    "The stack backend on your machine, in a QEMU VM resumed from a snapshot in well under a second.",
  )
  .version(JSON.parse(readFileSync(packageFile("package.json"), "utf8")).version)
  .option("--json", "machine-readable output on stdout")

  .addOption(
    new Option("--instance <name>", "instance to act on").default("default").env("STACK_EMULATOR_INSTANCE"),
  )
  .showHelpAfterError()
  .addHelpText(
    "after",
    `
Examples:
  stack-emulator start --image dev      boot the offline dev image (built from Debian packages)
  stack-emulator start                  resume the last image's snapshot with fresh keys
  stack-emulator status --json          state, health and ports for scripts
  stack-emulator stop                   save the running state; the next start resumes it
  stack-emulator reset                  forget this instance's data and keys
  stack-emulator pull                   fetch emulator-dev-latest from stack-auth/stack-auth and capture its snapshot
  stack-emulator pull --pr 1234         fetch a pull request's CI image (qemu-emulator-<arch>) and capture its snapshot
  stack-emulator run -- npm run dev     your app with the emulator's project, keys and URL in its environment
  stack-emulator env --prefix next > .env.local   the same variables for a .env file
  stack-emulator --instance b start --ports auto  a second emulator on free ports, kept for its next starts

Environment:
  STACK_EMULATOR_HOME     state directory (default ~/.stack/emulator)
  STACK_EMULATOR_IMAGE    image selector, as --image
  STACK_EMULATOR_DASHBOARD_PORT, _BACKEND_PORT, _MINIO_PORT, _INBUCKET_PORT
                          host ports (defaults 26700-26703); the original's EMULATOR_DASHBOARD_PORT etc.
                          work too, and the STACK_ names win when both are set
  PORT_PREFIX             the guest's port prefix (default 81); the mock OAuth server is on host port <prefix>14
  EMULATOR_RAM, EMULATOR_CPUS  the guest's MiB of RAM and vCPUs (a pulled image: 4096 and 4)
  EMULATOR_ACCEL          force an accelerator (kvm, hvf, whpx, tcg)
  EMULATOR_NO_SNAPSHOT=1  always cold boot; EMULATOR_NO_ROTATION=1 keep the public placeholder keys (unsafe)
  GH_TOKEN / GITHUB_TOKEN GitHub token for pull requests and workflow runs; GITHUB_API_URL for GitHub Enterprise`,
  );

const imageFlags = (command: Command) =>
  command
    .option("--image <selector>", "dev | release | release:<tag> | pr:<n> | run:<id> | <dir with image.json>")
    .option("--repo <owner/name>", "GitHub repository to pull from")
    .option("--tag <tag>", "release tag")
    .option("--branch <branch>", "use the branch's latest emulator release")
    .option("--pr <number>", "a pull request's CI build")
    .option("--run <id>", "a workflow run's build")
    .addOption(new Option("--arch <arch>", "guest architecture").choices(["amd64", "arm64"]));

interface StartFlags extends PullFlags {
  image?: string;
  skipSnapshot?: boolean;
  ports?: string;
  configFile?: string;
}

/** Options of every command that may start the emulator. */
const startFlags = (command: Command) =>
  imageFlags(command)
    .option(
      "--skip-snapshot",
      "cold boot without using or capturing a snapshot (same as EMULATOR_NO_SNAPSHOT=1)",
    )
    .option(
      "--ports <mode>",
      "auto: free ports, kept for this instance's next starts; default: the image's ports (forgets kept ones)",
    )
    .option(
      "--config-file <path>",
      "use the project the backend keeps for this config file (made on first use, keyed by its absolute path)",
    );

/**
 * The context for booting `image` on this instance's host ports: recorded or picked ones with `--ports auto` (or for
 * another instance whose default ports are taken). The engine takes each service's port from its variable, so the
 * plan reaches it that way.
 */
async function withHostPorts(ctx: Context, portsMode?: string): Promise<Context> {
  const ports = await assignPorts(ctx.paths, {
    services: contractServices(portPrefix(ctx.env)),
    env: ctx.env,
    instance: ctx.name,
    ...(portsMode ? { mode: parsePortsMode(portsMode) } : {}),
    reserved: reservedPorts(ctx.layout, ctx.name),
  });
  if (ports.note) ctx.report.info(ports.note);
  return { ...ctx, env: { ...ctx.env, ...ports.env } };
}

/**
 * The running instance, or a start like `stack-emulator start`: image, host ports (auto ones recorded), boot. The
 * returned context carries the port variables the start used.
 */
async function ensureStarted(
  ctx: Context,
  flags: StartFlags,
  json: boolean,
): Promise<{ ctx: Context; result: StartResult }> {
  const running = readState(ctx.paths);
  if (running && isSameProcess(running.qemu)) {
    if (flags.ports) ctx.report.info("already running: --ports applies from the next start");
    return { ctx, result: { alreadyRunning: true, state: running } };
  }
  const chosen = chooseImage(ctx, flags);
  let selector = chosen.selector;
  let image: Image;
  try {
    image = await resolveImage(ctx, selector, chosen.flags);
  } catch (error) {
    if (!isEmulatorError(error, "NO_IMAGE") || json || !(await offerDevImage(error))) {
      throw error;
    }
    selector = { kind: "dev" };
    image = await resolveImage(ctx, selector, chosen.flags);
  }
  ctx.report.mark("image found");
  const started = await withHostPorts(ctx, flags.ports);
  const result = await start(started, {
    selector,
    image,
    noSnapshot: Boolean(flags.skipSnapshot) || ctx.env.EMULATOR_NO_SNAPSHOT === "1",
    noRotation: ctx.env.EMULATOR_NO_ROTATION === "1",
  });
  writeCurrentImage(ctx.layout, selector, image.manifest.arch);
  return { ctx: started, result };
}

startFlags(
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
  const { ctx, json } = context(command);
  const { ctx: started, result } = await ensureStarted(ctx, flags, json);
  const { state } = result;
  if (flags.configFile) {
    const connection = await appConnection(started, flags.configFile);
    printJson({
      project_id: connection.projectId,
      publishable_client_key: connection.publishableClientKey,
      secret_server_key: connection.secretServerKey,
    });
    return;
  }
  const keysFile = keysFileInUse(ctx.paths.keys, state.rotation);
  output(json, { alreadyRunning: result.alreadyRunning, ...state, ...(keysFile ? { keysFile } : {}) }, () => {
    const lines = [
      result.alreadyRunning
        ? `already running (pid ${state.qemu.pid})`
        : `ready in ${(state.readyMs / 1000).toFixed(2)} s (${state.boot === "cold" ? "cold boot" : `${state.boot} resume`}, ${state.accel})`,
      ...state.services.map((s) => `  ${s.name.padEnd(10)} ${serviceUrl(s, "")}`),
      keysFile ? `  keys       ${keysFile}` : "  keys       PUBLIC placeholders (rotation skipped)",
    ];
    return lines.join("\n");
  });
});

startFlags(
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
  const { ctx } = context(command);
  // Commander drops the "--" it ends the options with; whether there was one decides shell or not.
  const child = childCommand(operands, process.argv.slice(process.argv.indexOf("run") + 1).includes("--"));
  const { ctx: started, result } = await ensureStarted(ctx, flags, false);
  try {
    const connection = await appConnection(started, flags.configFile);
    ctx.report.info(`running with the emulator at ${connection.apiUrl} (project ${connection.projectId})`);
    process.exitCode = await runChild(child, { ...process.env, ...composeAppEnv(connection) });
  } finally {
    if (!result.alreadyRunning) {
      await shieldedFromSignals(
        () => stop(ctx, { mode: "save" }),
        () => ctx.report.info("saving the emulator's state first; it stops in a moment"),
      );
    }
  }
});

/** On a terminal, a missing image becomes a question instead of a dead end. */
async function offerDevImage(error: EmulatorError): Promise<boolean> {
  if (!process.stdin.isTTY || !process.stderr.isTTY) return false;
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    const answer = await rl.question(`${error.message}\nStart the offline dev image instead? [Y/n] `);
    return /^(y|yes|)$/i.test(answer.trim());
  } finally {
    rl.close();
  }
}

program
  .command("stop")
  .description("stop the emulator, saving its running state so the next start resumes exactly there")
  .option("--no-save", "power down instead of saving the state (the next start boots from the disk)")
  .option("--all", "stop every instance in this home (STACK_EMULATOR_HOME)")
  .action(async (flags: { save: boolean; all?: boolean }, command: Command) => {
    const { ctx, json } = context(command);
    const mode = flags.save ? "save" : "powerdown";
    const describe = (result: { wasRunning: boolean; saved: boolean }) =>
      result.wasRunning
        ? result.saved
          ? "stopped; state saved for the next start"
          : "stopped"
        : "not running";
    if (flags.all) {
      const results = await stopAll(ctx.layout, ctx.env, ctx.report, mode);
      output(json, { instances: results }, () =>
        results.length === 0
          ? "no instances"
          : results
              .map((r) => `${r.instance}: ${"error" in r ? `FAILED: ${r.error.message}` : describe(r)}`)
              .join("\n"),
      );
      if (results.some((r) => "error" in r)) process.exitCode = 1;
      return;
    }
    const result = await stop(ctx, { mode });
    output(json, result, () => describe(result));
  });

program
  .command("status")
  .description("show whether the emulator runs, its services' health, image and accelerator")
  .addOption(
    new Option("-o, --output <format>", "text; json (as --json); env: the app's variables, as `env`").choices(
      ["text", "json", "env"],
    ),
  )
  .addOption(prefixOption())
  .action(async (flags: { output?: string; prefix: string }, command: Command) => {
    const { ctx, json: jsonFlag } = context(command);
    if (flags.output === "env") {
      await printAppEnv(ctx, { json: jsonFlag, prefix: flags.prefix });
      return;
    }
    const json = jsonFlag || flags.output === "json";
    const report = await status(ctx);
    output(json, report, () => {
      const lines = [`${report.instance}: ${report.state}${report.problem ? ` (${report.problem})` : ""}`];
      if (report.image) lines.push(`  image      ${report.image}`);
      if (report.accel) lines.push(`  qemu       pid ${report.pid}, ${report.accel}, VM ${report.vm ?? "-"}`);
      if (report.boot)
        lines.push(
          `  boot       ${report.boot}${report.snapshotMethod ? ` (${report.snapshotMethod})` : ""}`,
        );
      if (report.fallbackReason) lines.push(`  fallback   ${report.fallbackReason}`);
      if (report.rotation)
        lines.push(
          `  keys       ${report.keysFile ?? "PUBLIC placeholders (rotation skipped): never expose these ports"}`,
        );
      for (const s of report.services) {
        lines.push(
          `  ${s.name.padEnd(10)} ${s.healthy ? "healthy" : "UNHEALTHY"}  ${s.url} ${s.status ?? s.error ?? ""}`,
        );
      }
      if (report.savedState) lines.push("  saved      a stopped state waits to be resumed");
      return lines.join("\n");
    });
    // As LSB init scripts' status: 0 running and healthy, 3 stopped, 1 broken. Scripts wait on it.
    process.exitCode = STATUS_EXIT_CODES[report.state];
  });

const STATUS_EXIT_CODES = { running: 0, stopped: 3, broken: 1 } as const;

function prefixOption(): Option {
  return new Option(
    "--prefix <set>",
    "framework prefixes of the public variables: next (NEXT_PUBLIC_), vite (VITE_), expo (EXPO_PUBLIC_), none, all",
  )
    .choices(PREFIX_SETS)
    .default("all");
}

/** The app's variables for the running instance, as `KEY="value"` lines (or a JSON object). */
async function printAppEnv(ctx: Context, flags: { json: boolean; prefix: string; configFile?: string }) {
  const variables = composeAppEnv(await appConnection(ctx, flags.configFile), parsePrefixSet(flags.prefix));
  output(flags.json, variables, () => formatDotenv(variables).trimEnd());
}

program
  .command("env")
  .description('print the variables `run` gives an app, as KEY="value" lines for a .env file or eval')
  .addOption(prefixOption())
  .option(
    "--config-file <path>",
    "the project the backend keeps for this config file instead of the internal one",
  )
  .addHelpText(
    "after",
    `
The emulator must be running. The secret server key is printed as STACK_SECRET_SERVER_KEY only, never with a
public prefix.

Examples:
  stack-emulator env --prefix next > .env.local       a Next.js app
  eval "$(stack-emulator env --prefix none)"          this shell`,
  )
  .action(async (flags: { prefix: string; configFile?: string }, command: Command) => {
    const { ctx, json } = context(command);
    await printAppEnv(ctx, { json, ...flags });
  });

program
  .command("list")
  .description("list every instance in this home: state, image, ports, how it booted")
  .action(async (_flags: unknown, command: Command) => {
    const { ctx, json } = context(command);
    const instances = await listInstances(ctx.layout, ctx.env, ctx.report);
    output(json, { instances }, () =>
      instances.length === 0
        ? "no instances"
        : instances
            .map((i) => {
              const ports = Object.entries(i.ports)
                .map(([name, port]) => `${name}:${port}`)
                .join(" ");
              const details = [
                i.image,
                i.boot,
                ports || "default ports",
                i.savedState ? "saved state" : undefined,
                i.problem,
              ].filter(Boolean);
              return `${i.instance.padEnd(16)} ${i.state.padEnd(8)} ${details.join(", ")}`;
            })
            .join("\n"),
    );
  });

program
  .command("reset")
  .description("stop the emulator and delete this instance's disk, saved state and keys (images are kept)")
  .option("--images", "also delete downloaded and built images and their snapshots")
  .action(async (flags: { images?: boolean }, command: Command) => {
    const { ctx, json } = context(command);
    const result = await reset(ctx, { images: Boolean(flags.images) });
    output(json, { reset: true, wasRunning: result.wasRunning, images: Boolean(flags.images) }, () =>
      flags.images
        ? "instance, images and snapshots removed"
        : "instance removed; the next start begins from the snapshot",
    );
  });

program
  .command("logs")
  .description("print this CLI's log, QEMU's own messages, the guest's serial console and the app's own log")
  .option("-f, --follow", "keep printing new output (the serial console, or with --app the app's log)")
  .option("--serial", "only the serial console")
  .option("--app", "only the app's own log, read in the running guest (journalctl -u stack.service)")
  .option("-n, --lines <count>", "how many lines of the app's log", "1000")
  .action(
    async (flags: { follow?: boolean; serial?: boolean; app?: boolean; lines: string }, command: Command) => {
      const { ctx } = context(command);
      const lines = Number(flags.lines);
      if (!Number.isInteger(lines) || lines < 1) {
        throw new EmulatorError(
          "INVALID_ARGUMENT",
          `--lines ${flags.lines} is not a count`,
          "pass a whole number, such as 200",
        );
      }
      if (flags.app) {
        let shown = (await readAppLog(ctx, lines)).split("\n");
        process.stdout.write(shown.join("\n"));
        while (flags.follow) {
          await new Promise((r) => setTimeout(r, 1000));
          const next = (await readAppLog(ctx, 200)).split("\n");
          const fresh = newLines(shown, next);
          if (fresh.length > 0 && fresh.some(Boolean)) process.stdout.write(`${fresh.join("\n")}`);
          shown = next;
        }
        return;
      }
      const { cliLog, qemuLog, serialLog } = ctx.paths;
      const files = flags.serial ? [serialLog] : [cliLog, qemuLog, serialLog];
      for (const file of files) if (existsSync(file)) process.stdout.write(readFileSync(file));
      const running = readState(ctx.paths);
      if (!flags.serial && running && isSameProcess(running.qemu)) {
        const appLog = await readAppLog(ctx, lines).catch(
          (error: Error) => `(not readable: ${error.message})\n`,
        );
        process.stdout.write(`--- the app's log (stack.service) ---\n${appLog}`);
      }
      if (flags.follow) await follow(ctx.paths.serialLog);
    },
  );

async function follow(file: string): Promise<void> {
  let offset = existsSync(file) ? statSync(file).size : 0;
  await new Promise<void>(() => {
    watch(dirname(file), () => {
      if (!existsSync(file)) return;
      const size = statSync(file).size;
      if (size < offset) offset = 0;
      if (size > offset) {
        createReadStream(file, { start: offset, end: size - 1 }).pipe(process.stdout, { end: false });
        offset = size;
      }
    });
  });
}

program
  .command("doctor")
  .description(
    "check the host: QEMU, accelerator (proven by running a guest), firmware; each problem with its fix",
  )
  .addOption(
    new Option("--arch <arch>", "check for guests of this architecture (default: the host's)").choices([
      "amd64",
      "arm64",
    ]),
  )
  .action(async (flags: { arch?: "amd64" | "arm64" }, command: Command) => {
    const { ctx, json } = context(command);
    const report = await hostDoctor(ctx.layout, ctx.env, flags.arch);
    output(json, report, () =>
      report.checks
        .map(
          (c: DoctorCheck) =>
            `${c.status === "ok" ? "ok  " : c.status === "warn" ? "warn" : "FAIL"}  ${c.title}: ${c.detail}${c.fix && c.status !== "ok" ? `\n      fix: ${c.fix}` : ""}`,
        )
        .join("\n"),
    );
    if (!report.ok) process.exitCode = 1;
  });

imageFlags(
  program
    .command("pull")
    .description("download an image (verified, resumable) and capture its snapshot")
    .option("--skip-snapshot", "download only; the first start cold boots and captures"),
).action(async (flags: PullFlags & { image?: string; skipSnapshot?: boolean }, command: Command) => {
  const { ctx, json } = context(command);
  const chosen = chooseImage(ctx, flags);
  const selector = chosen.selector;
  const image =
    selector.kind === "dev" || selector.kind === "path"
      ? await resolveImage(ctx, selector, chosen.flags, true)
      : withMachineSettings(await pull(ctx, selector, chosen.flags), ctx.env);
  writeCurrentImage(ctx.layout, selector, image.manifest.arch);
  let captured = false;
  if (!flags.skipSnapshot && ctx.env.EMULATOR_NO_SNAPSHOT !== "1") {
    await capture(await withHostPorts(ctx), { selector, image, noSnapshot: false, noRotation: false });
    captured = true;
  }
  output(
    json,
    { image: describeSelector(selector), dir: image.dir, digest: image.manifest.digest, captured },
    () => `image ${image.manifest.name} ready at ${image.dir}${captured ? " (snapshot captured)" : ""}`,
  );
});

imageFlags(
  program.command("capture").description("capture the image's snapshot now (the emulator must be stopped)"),
).action(async (flags: PullFlags & { image?: string }, command: Command) => {
  const { ctx, json } = context(command);
  const chosen = chooseImage(ctx, flags);
  const selector = chosen.selector;
  const image = await resolveImage(ctx, selector, chosen.flags);
  const result = await capture(await withHostPorts(ctx), {
    selector,
    image,
    noSnapshot: false,
    noRotation: false,
  });
  output(json, result, () => `snapshot captured (${result.method}) in ${result.snapshotDir}`);
});

program
  .command("list-releases")
  .description("list emulator releases on GitHub")
  .option("--repo <owner/name>", "GitHub repository")
  .action(async (flags: { repo?: string }, command: Command) => {
    const { ctx, json } = context(command);
    const { listReleases } = await import("../image/pull.js");
    const releases = await listReleases(ctx, flags.repo);
    output(json, releases, () =>
      releases.length === 0
        ? "no emulator releases found"
        : releases
            .map(
              (r) =>
                `${r.tag.padEnd(36)} ${r.date.slice(0, 10)}  ${r.size.padStart(9)}  ${r.flags.join(",")}`,
            )
            .join("\n"),
    );
  });

// The instance's config-file sync (share-sync.ts), started detached by the commands that share a config file.
program
  .command("share-sync", { hidden: true })
  .requiredOption("--qemu-pid <pid>")
  .requiredOption("--qemu-start <time>")
  .action(async (flags: { qemuPid: string; qemuStart: string }, command: Command) => {
    const { ctx } = context(command);
    await runShareSync(ctx.paths, { pid: Number(flags.qemuPid), startTime: flags.qemuStart });
  });

async function main(argv: string[]): Promise<void> {
  // pnpm forwards a literal "--" from `pnpm start -- --help`; drop it so the flags after it still parse. After `run`
  // it is the user's: it says the command runs without a shell.
  const args = argv.filter((arg, index) => !(arg === "--" && index === 3 && argv[2] !== "run"));
  try {
    await program.parseAsync(args);
  } catch (error) {
    const { code, message, hint } = describeError(error);
    const json = args.includes("--json");
    if (json)
      process.stdout.write(
        `${JSON.stringify({ error: { code, message, ...(hint ? { hint } : {}) } }, null, 2)}\n`,
      );
    process.stderr.write(`error: ${message}\n${hint ? `  ${hint}\n` : ""}`);
    process.exitCode = exitCodeFor(error);
  }
}

await main(process.argv);
