import type { FetchResult, Verification } from "@stack/artifacts";
import { formatBytes } from "@stack/artifacts";
import type { Image } from "./image.js";

/** One file a pull downloaded, as `--json` reports it. */
export interface DownloadedFile {
  /** The release asset or the artifact's zip, as published. */
  name: string;
  /** Its size as published. */
  bytes: number;
  /** Fetched over the network by this run. */
  fetchedBytes: number;
  /** Kept from an earlier run that was interrupted (its `.part`). */
  resumedBytes: number;
  seconds: number;
  /** The most connections at once. */
  connections: number;
  verified: Verification;
}

/** What a pull downloaded: `download` in `pull --json`, and in `start --json` when the start pulled. */
export interface DownloadReport {
  files: DownloadedFile[];
}

/** An image a pull stored, and what it downloaded for it. */
export interface PulledImage {
  image: Image;
  download: DownloadReport;
}

/** The file as `--json` reports it; none when nothing was downloaded (a cache held it). */
export function describeFile(name: string, bytes: number, fetched: FetchResult): DownloadedFile[] {
  const { transfer } = fetched;
  if (!transfer) return [];
  return [
    {
      name,
      bytes,
      fetchedBytes: transfer.bytes,
      resumedBytes: transfer.resumed,
      seconds: Math.round(transfer.seconds * 1000) / 1000,
      connections: transfer.connections,
      verified: fetched.verified,
    },
  ];
}

/** The line a person reads once a file is here (`--json` has the same figures). */
export function summary(file: DownloadedFile): string {
  const rate = file.seconds > 0 ? `, ${formatBytes(file.fetchedBytes / file.seconds)}/s` : "";
  const links = `${file.connections} connection${file.connections === 1 ? "" : "s"}`;
  const kept =
    file.resumedBytes > 0 ? `; ${formatBytes(file.resumedBytes)} kept from an interrupted run` : "";
  return `downloaded ${file.name}: ${formatBytes(file.fetchedBytes)} in ${file.seconds.toFixed(1)} s (${links}${rate})${kept}`;
}
