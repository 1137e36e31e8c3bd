/**
 * One download() in a process of its own, for tests that kill it: the options as JSON in argv[2]. Prints the
 * result and the process's peak memory as one JSON line on stdout.
 */
import { type DownloadOptions, download } from "../src/index.js";

const opts = JSON.parse(process.argv[2]!) as DownloadOptions;
const result = await download({ ...opts, onMessage: (m) => console.error(m) });
console.log(JSON.stringify({ result, maxRssBytes: process.resourceUsage().maxRSS * 1024 }));
