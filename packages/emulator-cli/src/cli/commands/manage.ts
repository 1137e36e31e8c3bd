import { type Command, Option } from "commander";
import { composeAppEnv, formatDotenv, parsePrefixSet } from "../../app/app-env.js";
import { EmulatorError } from "../../core/errors.js";
import type { Instance } from "../../instance/instance.js";
import { inspectAll, stopAll } from "../../instance/instances.js";
import { type Io, invocation, output } from "../io.js";
import { prefixOption } from "../options.js";
import { STATUS_EXIT_CODES, statusReport, statusText } from "../status-view.js";

/** The app's variables for the running instance, as `KEY="value"` lines (or a JSON object). */
async function printAppEnv(
  io: Io,
  instance: Instance,
  flags: { json: boolean; prefix: string; configFile?: string },
): Promise<void> {
  const variables = composeAppEnv(await instance.connection(flags.configFile), parsePrefixSet(flags.prefix));
  output(io, flags.json, variables, () => formatDotenv(variables).trimEnd());
}

const describeStop = (result: { wasRunning: boolean; saved: boolean }) =>
  result.wasRunning ? (result.saved ? "stopped; state saved for the next start" : "stopped") : "not running";

export function registerManage(program: Command, io: Io): void {
  program
    .command("stop")
    .description("stop the emulator, saving its running state so the next start resumes exactly there")
    .option("--no-save", "power down instead of saving the state (the next start boots from the disk)")
    .option("--all", "stop every instance in this home (STACK_EMULATOR_HOME)")
    .action(async (flags: { save: boolean; all?: boolean }, command: Command) => {
      const { settings, report, json, instance } = invocation(io, command);
      const mode = flags.save ? "save" : "powerdown";
      if (flags.all) {
        const results = await stopAll(settings, report, mode);
        output(io, json, { instances: results }, () =>
          results.length === 0
            ? "no instances"
            : results
                .map((r) => `${r.instance}: ${"error" in r ? `FAILED: ${r.error.message}` : describeStop(r)}`)
                .join("\n"),
        );
        if (results.some((r) => "error" in r)) io.exitCode = 1;
        return;
      }
      const result = await instance.stop(mode);
      output(io, json, result, () => describeStop(result));
    });

  program
    .command("status")
    .description("show whether the emulator runs, its services' health, image and accelerator")
    .addOption(
      new Option(
        "-o, --output <format>",
        "text; json (as --json); env: the app's variables, as `env`",
      ).choices(["text", "json", "env"]),
    )
    .addOption(prefixOption())
    .action(async (flags: { output?: string; prefix: string }, command: Command) => {
      const { json: jsonFlag, instance } = invocation(io, command);
      if (flags.output === "env") {
        await printAppEnv(io, instance, { json: jsonFlag, prefix: flags.prefix });
        return;
      }
      const report = statusReport(instance, await instance.inspect({ probe: true }));
      output(io, jsonFlag || flags.output === "json", report, () => statusText(report));
      io.exitCode = STATUS_EXIT_CODES[report.state];
    });

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
      const { json, instance } = invocation(io, command);
      await printAppEnv(io, instance, { json, ...flags });
    });

  program
    .command("list")
    .description("list every instance in this home: state, image, ports, how it booted")
    .action(async (_flags: unknown, command: Command) => {
      const { settings, report, json } = invocation(io, command);
      const instances = (await inspectAll(settings, report)).map((i) => {
        const state = i.state ?? i.stale;
        return {
          instance: i.name,
          state: i.status,
          ...(i.problem ? { problem: i.problem } : {}),
          ...(state && i.status !== "stopped"
            ? { image: `${state.image.selector} (${state.image.name})` }
            : {}),
          ports: i.ports,
          ...(state ? { boot: state.boot } : {}),
          ...(state?.fallbackReason ? { fallbackReason: state.fallbackReason } : {}),
          savedState: i.savedState,
        };
      });
      output(io, json, { instances }, () =>
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
    .option("--images", "also delete the images and snapshots no other instance uses (and list those kept)")
    .option("--force", "with --images: also delete the other instances that use them")
    .action(async (flags: { images?: boolean; force?: boolean }, command: Command) => {
      const { json, instance } = invocation(io, command);
      if (flags.force && !flags.images) {
        throw new EmulatorError(
          "INVALID_ARGUMENT",
          "--force goes with --images",
          "stack-emulator reset --images --force",
        );
      }
      const result = await instance.reset({ images: Boolean(flags.images), force: Boolean(flags.force) });
      output(io, json, { reset: true, images: Boolean(flags.images), ...result }, () =>
        [
          result.existed
            ? `instance ${instance.name} removed`
            : `no instance named ${instance.name}: nothing of it to remove`,
          ...(flags.images ? ["images and snapshots no instance uses removed"] : []),
          ...(result.kept ?? []).map(
            (k) =>
              `kept ${k.path}: used by ${k.usedBy.join(", ")} (reset --images --force deletes those too)`,
          ),
        ].join("\n"),
      );
    });
}
