import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import * as v from "valibot";

/** A process as we recorded it: the pid alone is not enough, since pids are reused after a crash. */
export interface ProcessIdentity {
  pid: number;
  startTime: string;
}

/** The fields of a recorded ProcessIdentity, for the schemas of the files that record one. */
export const processIdentityEntries = {
  pid: v.pipe(v.number(), v.integer(), v.minValue(2)),
  startTime: v.string(),
};

export const processIdentitySchema: v.GenericSchema<unknown, ProcessIdentity> =
  v.object(processIdentityEntries);

/** Start time of a running process as an opaque, stable string, or undefined when no such process exists. */
export function processStartTime(pid: number): string | undefined {
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  if (process.platform === "linux") {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      // The command name (field 2) may contain spaces and parentheses: fields are counted after the last ')'.
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const state = fields[0];
      if (state === "Z" || state === "X") return undefined;
      return fields[19];
    } catch {
      return undefined;
    }
  }
  try {
    const out = execFileSync("ps", ["-o", "lstart=", "-p", String(pid)], { encoding: "utf8" }).trim();
    return out || undefined;
  } catch {
    return undefined;
  }
}

export function identify(pid: number): ProcessIdentity | undefined {
  const startTime = processStartTime(pid);
  return startTime === undefined ? undefined : { pid, startTime };
}

export function isSameProcess(recorded: ProcessIdentity | undefined): boolean {
  if (!recorded) return false;
  return processStartTime(recorded.pid) === recorded.startTime;
}

/** The command line of a running process, arguments joined by spaces; empty when it is gone or unreadable. */
export function commandLine(pid: number): string {
  if (!Number.isInteger(pid) || pid <= 0) return "";
  try {
    if (process.platform === "linux")
      return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ");
    return execFileSync("ps", ["-o", "command=", "-p", String(pid)], { encoding: "utf8" }).trim();
  } catch {
    return "";
  }
}
