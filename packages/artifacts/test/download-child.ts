/**
 * One download() in a process of its own, for tests that kill it: the options as JSON in argv[2]. Prints the
 * result and the process's peak memory as one JSON line on stdout.
 */
import { readFileSync } from "node:fs";
import { type DownloadOptions, download } from "../src/index.js";

const opts = JSON.parse(process.argv[2]!) as DownloadOptions;
const result = await download({ ...opts, onMessage: (m) => console.error(m) });
console.log(JSON.stringify({ result, maxRssBytes: peakRss() }));

/**
 * VmHWM where there is /proc: getrusage's maxRSS also counts the parent's memory, which a spawned child
 * inherits for the moment between fork and exec.
 */
function peakRss(): number {
  try {
    return Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync("/proc/self/status", "utf8"))![1]) * 1024;
  } catch {
    return process.resourceUsage().maxRSS * 1024;
  }
}
