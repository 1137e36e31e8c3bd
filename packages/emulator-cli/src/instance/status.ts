import { existsSync } from "node:fs";
import { QmpClient } from "@stack/qmp";
import type { Context } from "../core/context.js";
import { isSameProcess } from "../core/process-identity.js";
import { checkServices, type ServiceHealth } from "../guest/health.js";
import { keysFileInUse } from "../guest/secrets.js";
import { readCurrentImage } from "../image/image-store.js";
import { pristineSnapshotDir, readSnapshot, snapshotFiles } from "../vm/snapshot.js";
import { readState } from "./instance-state.js";

export interface StatusReport {
  instance: string;
  state: "running" | "stopped" | "broken";
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

export async function status(ctx: Context): Promise<StatusReport> {
  const { paths, layout } = ctx;
  const state = readState(paths);
  const savedState = existsSync(paths.suspend);
  const base = { instance: ctx.name, home: layout.home, savedState };
  if (!state) {
    const current = readCurrentImage(layout);
    return { ...base, state: "stopped", services: [], ...(current ? { image: current.selector } : {}) };
  }
  const snapshot = readSnapshot(snapshotFiles(pristineSnapshotDir(layout, state.image.name))).manifest;
  const details = {
    ...base,
    image: `${state.image.selector} (${state.image.name})`,
    pid: state.qemu.pid,
    accel: state.accel,
    boot: state.boot,
    rotation: state.rotation,
    ...(keysFileInUse(paths.keys, state.rotation) ? { keysFile: paths.keys } : {}),
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
  };
  if (!isSameProcess(state.qemu)) {
    return {
      ...details,
      state: "broken",
      problem: `QEMU (pid ${state.qemu.pid}) is gone; \`stack-emulator start\` recovers, \`stack-emulator reset\` starts over`,
      services: [],
    };
  }
  let vm: string | undefined;
  try {
    const qmp = await QmpClient.connect(paths.qmpSocket, { timeoutMs: 2000 });
    try {
      vm = (await qmp.queryStatus()).status;
    } finally {
      await qmp.close();
    }
  } catch {
    vm = "unreachable";
  }
  const health = await checkServices(state.services);
  const services = health.map((h) => ({
    ...h,
    hostPort: state.services.find((s) => s.name === h.name)?.hostPort ?? 0,
  }));
  const healthy = vm === "running" && services.every((s) => s.healthy);
  return {
    ...details,
    vm,
    services,
    state: healthy ? "running" : "broken",
    ...(healthy ? {} : { problem: vm !== "running" ? `the VM is ${vm}` : "a service is not healthy" }),
  };
}
