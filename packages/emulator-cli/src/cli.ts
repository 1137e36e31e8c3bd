#!/usr/bin/env node
import { Command } from "commander";

const program = new Command("stack-emulator").description("Local stack backend in a QEMU VM");
program
  .command("start")
  .description("Start the emulator")
  .action(() => {});
// pnpm forwards a literal "--" from `pnpm start -- --help`; drop it so flags after it still parse.
const argv = process.argv.filter((arg, index) => !(arg === "--" && index === 3));
program.parse(argv);
