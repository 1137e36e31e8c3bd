import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync } from "node:fs";
import { join } from "node:path";
import { identify, isSameProcess } from "./process-identity.js";

/**
 * Snapshots, saved states and downloaded images are assembled in a staging directory named after its process;
 * only a complete one is renamed into place, so a crash midway leaves the previous version (or none), never a
 * broken one.
 */
export function createStaging(parent: string): string {
  mkdirSync(parent, { recursive: true });
  const self = identify(process.pid);
  const dir = join(
    parent,
    `.staging-${process.pid}-${self?.startTime ?? "0"}-${randomBytes(3).toString("hex")}`,
  );
  mkdirSync(dir, { mode: 0o700 });
  return dir;
}

/** Removes staging directories whose owning process is gone. */
export function removeAbandonedStaging(parent: string): void {
  let names: string[] = [];
  try {
    names = readdirSync(parent);
  } catch {
    return;
  }
  for (const name of names) {
    const match = /^\.staging-(\d+)-(\d+)-/.exec(name);
    if (match && !isSameProcess({ pid: Number(match[1]), startTime: match[2] as string })) {
      rmSync(join(parent, name), { recursive: true, force: true });
    }
  }
}

/** Swaps a staged directory into place: the old one is moved aside first, then removed. */
export function commitStaging(staging: string, target: string): void {
  const aside = `${target}.old-${randomBytes(3).toString("hex")}`;
  const hadOld = existsSync(target);
  if (hadOld) renameSync(target, aside);
  renameSync(staging, target);
  if (hadOld) rmSync(aside, { recursive: true, force: true });
}
