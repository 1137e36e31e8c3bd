import type { ServiceHealth } from "../guest/health.js";
import { keysFileInUse } from "../guest/secrets.js";
import { readCurrentImage } from "../image/image-store.js";
import type { Inspection } from "../instance/inspect.js";
import type { Instance } from "../instance/instance.js";
import { readSnapshot, snapshotFiles } from "../vm/snapshot.js";
import { snapshotGenerations } from "../vm/snapshot-store.js";

/** What `status` reports, as JSON for scripts (the text is made from it). */
export interface StatusReport {
  instance: string;
  state: Inspection["status"];
  problem?: string;
  image?: string;
  pid?: number;
  vm?: string;
  accel?: string;
  boot?: string;
  snapshotMethod?: string;
  fallbackReason?: string;
  rotation?: string;
  /** Present only when the guest holds this install's keys and the file exists. */
  keysFile?: string;
  readyMs?: number;
  startedAt?: string;
  services: (ServiceHealth & { hostPort: number })[];
  savedState: boolean;
  snapshot?: { method: string; createdAt: string; stateBytes: number };
  home: string;
}

/** The status report of an inspection (made with `probe`). */
export function statusReport(instance: Instance, inspection: Inspection): StatusReport {
  const { layout } = instance.ctx;
  const base = { instance: instance.name, home: layout.home, savedState: inspection.savedState };
  const state = inspection.state ?? inspection.stale;
  if (!state) {
    const current = readCurrentImage(layout);
    return {
      ...base,
      state: inspection.status,
      ...(inspection.problem ? { problem: inspection.problem } : {}),
      ...(inspection.orphan ? { pid: inspection.orphan.pid } : {}),
      services: [],
      ...(current ? { image: current.selector } : {}),
    };
  }
  const { current } = snapshotGenerations(layout, state.image.name);
  const snapshot = current ? readSnapshot(snapshotFiles(current)).manifest : undefined;
  const keysFile = keysFileInUse(instance.paths.keys, state.rotation);
  const services = (inspection.health ?? []).map((h) => ({
    ...h,
    hostPort: state.services.find((s) => s.name === h.name)?.hostPort ?? 0,
  }));
  return {
    ...base,
    state: inspection.status,
    ...(inspection.problem ? { problem: inspection.problem } : {}),
    image: `${state.image.selector} (${state.image.name})`,
    pid: state.qemu.pid,
    ...(inspection.vm ? { vm: inspection.vm } : {}),
    accel: state.accel,
    boot: state.boot,
    rotation: state.rotation,
    ...(keysFile ? { keysFile } : {}),
    readyMs: state.readyMs,
    startedAt: state.startedAt,
    ...(state.snapshotMethod ? { snapshotMethod: state.snapshotMethod } : {}),
    ...(state.fallbackReason ? { fallbackReason: state.fallbackReason } : {}),
    ...(snapshot
      ? {
          snapshot: {
            method: snapshot.fingerprint.method,
            createdAt: snapshot.createdAt,
            stateBytes: snapshot.stateBytes,
          },
        }
      : {}),
    services,
  };
}

export function statusText(report: StatusReport): string {
  const lines = [`${report.instance}: ${report.state}${report.problem ? ` (${report.problem})` : ""}`];
  if (report.image) lines.push(`  image      ${report.image}`);
  if (report.accel) lines.push(`  qemu       pid ${report.pid}, ${report.accel}, VM ${report.vm ?? "-"}`);
  if (report.boot) {
    lines.push(`  boot       ${report.boot}${report.snapshotMethod ? ` (${report.snapshotMethod})` : ""}`);
  }
  if (report.fallbackReason) lines.push(`  fallback   ${report.fallbackReason}`);
  if (report.rotation) {
    lines.push(
      `  keys       ${report.keysFile ?? "PUBLIC placeholders (rotation skipped): never expose these ports"}`,
    );
  }
  for (const s of report.services) {
    lines.push(
      `  ${s.name.padEnd(10)} ${s.healthy ? "healthy" : "UNHEALTHY"}  ${s.url} ${s.status ?? s.error ?? ""}`,
    );
  }
  if (report.savedState) lines.push("  saved      a stopped state waits to be resumed");
  return lines.join("\n");
}

/** As LSB init scripts' status: 0 running and healthy, 3 stopped, 1 broken. Scripts wait on it. */
export const STATUS_EXIT_CODES = { running: 0, stopped: 3, broken: 1 } as const;
