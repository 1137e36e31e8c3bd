import { createReadStream, existsSync, readFileSync, statSync, watch } from "node:fs";
import { dirname } from "node:path";
import type { DoctorCheck } from "@stack/host-detect";
import { type Command, Option } from "commander";
import { EmulatorError } from "../../core/errors.js";
import { newLines, readAppLog } from "../../guest/app-log.js";
import { hostDoctor } from "../../host/host.js";
import { runShareSync } from "../../instance/share-sync.js";
import { type Io, invocation, output } from "../io.js";

/** Prints what is appended to `file` from now on, until the process ends. */
async function follow(io: Io, file: string): Promise<void> {
  let offset = existsSync(file) ? statSync(file).size : 0;
  await new Promise<void>(() => {
    watch(dirname(file), () => {
      if (!existsSync(file)) return;
      const size = statSync(file).size;
      if (size < offset) offset = 0;
      if (size > offset) {
        createReadStream(file, { start: offset, end: size - 1 }).pipe(io.stdout, { end: false });
        offset = size;
      }
    });
  });
}

export function registerHost(program: Command, io: Io): void {
  program
    .command("logs")
    .description(
      "print this CLI's log, QEMU's own messages, the guest's serial console and the app's own log",
    )
    .option("-f, --follow", "keep printing new output (the serial console, or with --app the app's log)")
    .option("--serial", "only the serial console")
    .option("--app", "only the app's own log, read in the running guest (journalctl -u stack.service)")
    .option("-n, --lines <count>", "how many lines of the app's log", "1000")
    .action(
      async (
        flags: { follow?: boolean; serial?: boolean; app?: boolean; lines: string },
        command: Command,
      ) => {
        const { instance } = invocation(io, command);
        const { paths } = instance;
        const lines = Number(flags.lines);
        if (!Number.isInteger(lines) || lines < 1) {
          throw new EmulatorError(
            "INVALID_ARGUMENT",
            `--lines ${flags.lines} is not a count`,
            "pass a whole number, such as 200",
          );
        }
        const running = (await instance.inspect()).state !== undefined;
        if (flags.app) {
          if (!running) {
            throw new EmulatorError(
              "NOT_RUNNING",
              `the emulator instance ${instance.name} is not running`,
              "the app's log is read in the running guest; `stack-emulator start` first",
            );
          }
          let shown = (await readAppLog(paths, lines)).split("\n");
          io.stdout.write(shown.join("\n"));
          while (flags.follow) {
            await new Promise((r) => setTimeout(r, 1000));
            const next = (await readAppLog(paths, 200)).split("\n");
            const fresh = newLines(shown, next);
            if (fresh.some(Boolean)) io.stdout.write(fresh.join("\n"));
            shown = next;
          }
          return;
        }
        const files = flags.serial ? [paths.serialLog] : [paths.cliLog, paths.qemuLog, paths.serialLog];
        for (const file of files) if (existsSync(file)) io.stdout.write(readFileSync(file));
        if (!flags.serial && running) {
          const appLog = await readAppLog(paths, lines).catch(
            (error: Error) => `(not readable: ${error.message})\n`,
          );
          io.stdout.write(`--- the app's log (stack.service) ---\n${appLog}`);
        }
        if (flags.follow) await follow(io, paths.serialLog);
      },
    );

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
      const { settings, json } = invocation(io, command);
      const report = await hostDoctor(settings, flags.arch);
      output(io, json, report, () =>
        report.checks
          .map(
            (c: DoctorCheck) =>
              `${c.status === "ok" ? "ok  " : c.status === "warn" ? "warn" : "FAIL"}  ${c.title}: ${c.detail}${c.fix && c.status !== "ok" ? `\n      fix: ${c.fix}` : ""}`,
          )
          .join("\n"),
      );
      if (!report.ok) io.exitCode = 1;
    });

  // The instance's config-file sync (share-sync.ts), started detached by the commands that share a config file.
  program
    .command("share-sync", { hidden: true })
    .requiredOption("--qemu-pid <pid>")
    .requiredOption("--qemu-start <time>")
    .action(async (flags: { qemuPid: string; qemuStart: string }, command: Command) => {
      const { instance } = invocation(io, command);
      await runShareSync(instance.paths, { pid: Number(flags.qemuPid), startTime: flags.qemuStart });
    });
}
