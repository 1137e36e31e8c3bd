import { type Command, Option } from "commander";
import { PREFIX_SETS } from "../app/app-env.js";

/** Options that pick an image. */
export const imageOptions = (command: Command) =>
  command
    .option("--image <selector>", "dev | release | release:<tag> | pr:<n> | run:<id> | <dir with image.json>")
    .option("--repo <owner/name>", "GitHub repository to pull from")
    .option("--tag <tag>", "release tag")
    .option("--branch <branch>", "use the branch's latest emulator release")
    .option("--pr <number>", "a pull request's CI build")
    .option("--run <id>", "a workflow run's build")
    .addOption(new Option("--arch <arch>", "guest architecture").choices(["amd64", "arm64"]));

/** Options of every command that may start the emulator. */
export const startOptions = (command: Command) =>
  imageOptions(command)
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

export function prefixOption(): Option {
  return new Option(
    "--prefix <set>",
    "framework prefixes of the public variables: next (NEXT_PUBLIC_), vite (VITE_), expo (EXPO_PUBLIC_), none, all",
  )
    .choices(PREFIX_SETS)
    .default("all");
}
