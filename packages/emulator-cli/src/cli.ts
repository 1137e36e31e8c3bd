#!/usr/bin/env node
import { createReadStream, existsSync, readFileSync, statSync, watch } from "node:fs";
import { dirname } from "node:path";
import { createInterface } from "node:readline/promises";
import type { DoctorCheck } from "@stack/host-detect";
import { Command, Option } from "commander";
import { capture, reset, start, stop } from "./commands.js";
import { type Context, createContext } from "./context.js";
import { describeError, type EmulatorError, exitCodeFor, isEmulatorError } from "./errors.js";
import { serviceUrl } from "./health.js";
import { hostDoctor } from "./host.js";
import { type Image, loadImage } from "./image.js";
import {
  describeSelector,
  ensureDevImage,
  type ImageSelector,
  type PullFlags,
  parseImageSelector,
  readCurrentSelector,
  selectorFromFlags,
  storedImage,
  writeCurrentSelector,
} from "./image-store.js";
import { resolveHome, validateInstanceName } from "./paths.js";
import { createReporter } from "./report.js";
import { keysFileInUse } from "./secrets.js";
import { status } from "./status.js";

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

function output(json: boolean, data: unknown, human: () => string): void {
  process.stdout.write(json ? `${JSON.stringify(data, null, 2)}\n` : `${human()}\n`);
}

async function resolveImage(ctx: Context, selector: ImageSelector, rebuild = false): Promise<Image> {
  switch (selector.kind) {
    case "dev":
      return ensureDevImage(ctx.layout, ctx.env, {
        rebuild,
        onBuild: () => ctx.report.step("building the dev image from Debian packages (cached by content)"),
      });
    case "path":
      return loadImage(selector.path);
    default:
      return storedImage(ctx.layout, selector) ?? (await pull(ctx, selector, {}));
  }
}

/** The download code (undici and friends) is loaded only by commands that download. */
async function pull(ctx: Context, selector: ImageSelector, flags: PullFlags): Promise<Image> {
  const { pullImage } = await import("./pull.js");
  return pullImage(ctx, selector, flags);
}

function chooseSelector(ctx: Context, flags: PullFlags & { image?: string }): ImageSelector {
  const explicit = flags.image ?? ctx.env.STACK_EMULATOR_IMAGE;
  if (explicit) return parseImageSelector(explicit);
  const fromFlags = selectorFromFlags(flags);
  if (fromFlags) return fromFlags;
  const current = readCurrentSelector(ctx.layout);
  if (current) return parseImageSelector(current);
  return { kind: "release" };
}

const program = new Command("stack-emulator")
  .description(
    "The stack backend on your machine, in a QEMU VM resumed from a snapshot in well under a second.",
  )
  .version(JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")).version)
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
  stack-emulator pull --pr 1234         fetch a pull request's CI image and capture its snapshot

Environment:
  STACK_EMULATOR_HOME     state directory (default ~/.stack/emulator)
  STACK_EMULATOR_IMAGE    image selector, as --image
  STACK_EMULATOR_DASHBOARD_PORT, _BACKEND_PORT, _MINIO_PORT, _INBUCKET_PORT, _MOCK_OAUTH_PORT
                          host ports (defaults 26700-26704); the original's EMULATOR_DASHBOARD_PORT etc.
                          work too, and the STACK_ names win when both are set
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

imageFlags(
  program
    .command("start")
    .description("start the emulator: resume its snapshot, or cold boot and capture one the first time")
    .option(
      "--skip-snapshot",
      "cold boot without using or capturing a snapshot (same as EMULATOR_NO_SNAPSHOT=1)",
    )
    // `pnpm --filter emulator-cli start -- --help` lands here: point at the rest of the CLI too.
    .addHelpText(
      "after",
      `
Other commands: stop, status, reset, logs, doctor, pull, capture, list-releases.
Run \`stack-emulator --help\` (or \`pnpm --filter emulator-cli stack-emulator --help\`) for all of them.`,
    ),
).action(async (flags: PullFlags & { image?: string; skipSnapshot?: boolean }, command: Command) => {
  const { ctx, json } = context(command);
  let selector = chooseSelector(ctx, flags);
  let image: Image;
  try {
    image = await resolveImage(ctx, selector);
  } catch (error) {
    if (!isEmulatorError(error, "NO_IMAGE") || json || !(await offerDevImage(error))) {
      throw error;
    }
    selector = { kind: "dev" };
    image = await resolveImage(ctx, selector);
  }
  ctx.report.mark("image found");
  const result = await start(ctx, {
    selector,
    image,
    noSnapshot: Boolean(flags.skipSnapshot) || ctx.env.EMULATOR_NO_SNAPSHOT === "1",
    noRotation: ctx.env.EMULATOR_NO_ROTATION === "1",
  });
  writeCurrentSelector(ctx.layout, selector);
  const { state } = result;
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
  .action(async (flags: { save: boolean }, command: Command) => {
    const { ctx, json } = context(command);
    const result = await stop(ctx, { mode: flags.save ? "save" : "powerdown" });

    output(json, result, () =>
      result.wasRunning
        ? result.saved
          ? "stopped; state saved for the next start"
          : "stopped"
        : "not running",
    );
  });

program
  .command("status")
  .description("show whether the emulator runs, its services' health, image and accelerator")
  .action(async (_flags: unknown, command: Command) => {
    const { ctx, json } = context(command);
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
    if (report.state === "broken") process.exitCode = 1;
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
  .description("print this CLI's log, QEMU's own messages and the guest's serial console")
  .option("-f, --follow", "keep printing new output")
  .option("--serial", "only the serial console")
  .action(async (flags: { follow?: boolean; serial?: boolean }, command: Command) => {
    const { ctx } = context(command);
    const { cliLog, qemuLog, serialLog } = ctx.paths;
    const files = flags.serial ? [serialLog] : [cliLog, qemuLog, serialLog];
    for (const file of files) if (existsSync(file)) process.stdout.write(readFileSync(file));
    if (flags.follow) await follow(ctx.paths.serialLog);
  });

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
  .description("check the host: QEMU, accelerator, firmware; each problem with its fix")
  .action(async (_flags: unknown, command: Command) => {
    const { ctx, json } = context(command);
    const report = await hostDoctor(ctx.layout, ctx.env);
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
  const selector = chooseSelector(ctx, flags);
  const image =
    selector.kind === "dev" || selector.kind === "path"
      ? await resolveImage(ctx, selector, true)
      : await pull(ctx, selector, flags);
  writeCurrentSelector(ctx.layout, selector);
  let captured = false;
  if (!flags.skipSnapshot && ctx.env.EMULATOR_NO_SNAPSHOT !== "1") {
    await capture(ctx, { selector, image, noSnapshot: false, noRotation: false });
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
  const selector = chooseSelector(ctx, flags);
  const image = await resolveImage(ctx, selector);
  const result = await capture(ctx, { selector, image, noSnapshot: false, noRotation: false });
  output(json, result, () => `snapshot captured (${result.method}) in ${result.snapshotDir}`);
});

program
  .command("list-releases")
  .description("list emulator releases on GitHub")
  .option("--repo <owner/name>", "GitHub repository")
  .action(async (flags: { repo?: string }, command: Command) => {
    const { ctx, json } = context(command);
    const { listReleases } = await import("./pull.js");
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

async function main(argv: string[]): Promise<void> {
  // pnpm forwards a literal "--" from `pnpm start -- --help`; drop it so the flags after it still parse.
  const args = argv.filter((arg, index) => !(arg === "--" && index === 3));
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
