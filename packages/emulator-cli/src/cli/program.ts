import { readFileSync } from "node:fs";
import { Command, CommanderError } from "commander";
import { packageFile } from "../core/package-files.js";
import { registerHost } from "./commands/host.js";
import { registerImages } from "./commands/images.js";
import { registerManage } from "./commands/manage.js";
import { registerStart } from "./commands/start.js";
import { type Io, printJson } from "./io.js";

const HELP_AFTER = `
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
  STACK_EMULATOR_INSTANCE instance, as --instance (default: default)
  STACK_EMULATOR_IMAGE    image selector, as --image
  STACK_EMULATOR_DASHBOARD_PORT, _BACKEND_PORT, _MINIO_PORT, _INBUCKET_PORT
                          host ports (defaults 26700-26703); the original's EMULATOR_DASHBOARD_PORT etc.
                          work too, and the STACK_ names win when both are set; --ports beats them all
  PORT_PREFIX             the guest's port prefix (default 81); the mock OAuth server is on host port <prefix>14
  EMULATOR_RAM, EMULATOR_CPUS  the guest's MiB of RAM and vCPUs (a pulled image: 4096 and 4)
  EMULATOR_ACCEL          force an accelerator (kvm, hvf, whpx, tcg)
  EMULATOR_NO_SNAPSHOT=1  always cold boot; EMULATOR_NO_ROTATION=1 keep the public placeholder keys (unsafe)
  GH_TOKEN / GITHUB_TOKEN GitHub token for pull requests and workflow runs; GITHUB_API_URL for GitHub Enterprise`;

/** The whole command line: commander definitions; every action is flags -> settings -> one call -> output. */
export function createProgram(io: Io): Command {
  const program = new Command("stack-emulator")
    .description(
      "The stack backend on your machine, in a QEMU VM resumed from a snapshot in well under a second.",
    )
    .option("-V, --version", "print this CLI's version (as JSON with --json)")
    .on("option:version", () => printVersion(io))
    .option("--json", "machine-readable output on stdout")
    .option("--instance <name>", "instance to act on (default: STACK_EMULATOR_INSTANCE, else default)")
    .showHelpAfterError()
    .exitOverride()
    .configureOutput({
      writeOut: (text) => io.stdout.write(text),
      writeErr: (text) => io.stderr.write(text),
    })
    .addHelpText("after", HELP_AFTER);
  registerStart(program, io);
  registerManage(program, io);
  registerImages(program, io);
  registerHost(program, io);
  return program;
}

/**
 * commander's own version option prints plain text as soon as it sees the flag, before a later `--json` is parsed;
 * so, like run()'s error output, --json anywhere on the command line asks for JSON.
 */
function printVersion(io: Io): never {
  const { version } = JSON.parse(readFileSync(packageFile("package.json"), "utf8")) as { version: string };
  if (io.argv.includes("--json")) printJson(io, { version });
  else io.stdout.write(`${version}\n`);
  // As commander ends --help and its own --version: run() turns this into exit status 0.
  throw new CommanderError(0, "commander.version", version);
}
