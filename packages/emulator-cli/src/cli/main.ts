#!/usr/bin/env node
import { endOwnedVms } from "../vm/owned.js";
import { run } from "./run.js";

// Output that can no longer be written (a reader that went away: `stack-emulator start | head -1`) is an interrupt
// like Ctrl-C: the VM this command started is ended, and the command ends with the status a shell gives a process
// killed by SIGPIPE.
let outputClosed = false;
for (const stream of [process.stdout, process.stderr]) {
  stream.on("error", (error: NodeJS.ErrnoException) => {
    if (outputClosed) return;
    outputClosed = true;
    void endOwnedVms(`the output failed (${error.code ?? error.message})`).finally(() => process.exit(141));
  });
}

process.exitCode = await run(process.argv, {
  stdout: process.stdout,
  stderr: process.stderr,
  stdin: process.stdin,
  env: process.env,
});
