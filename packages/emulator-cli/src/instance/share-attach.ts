import { QgaClient } from "@stack/qga";
import type { QmpClient } from "@stack/qmp";
import type { Context } from "../core/context.js";
import type { ProcessIdentity } from "../core/process-identity.js";
import { plugShare, readShareRecord, stageShare, unmountShare } from "../guest/share.js";
import { startShareSync, stopShareSync } from "./share-sync.js";

/**
 * Shares this instance's config files with its running guest (docs/guest-contract.md, section 6): staged, the 9p
 * device plugged in unless it is there already, mounted at /host, kept in sync by share-sync. Returns whether the
 * device is in the VM now.
 */
export async function attachShare(
  ctx: Context,
  qmp: QmpClient,
  qemu: ProcessIdentity,
  devicePresent: boolean,
): Promise<boolean> {
  const record = readShareRecord(ctx.paths, (message) => ctx.report.warn(message));
  if (record.files.length === 0) return devicePresent;
  for (const missing of stageShare(ctx.paths, record)) {
    ctx.report.warn(`config file ${missing} is gone: the guest no longer sees it`);
  }
  const qga = await QgaClient.connect(ctx.paths.qgaSocket, { timeoutMs: ctx.settings.timeouts.agentMs });
  try {
    await plugShare(qmp, qga, devicePresent);
  } finally {
    await qga.close().catch(() => undefined);
  }
  // share-sync is this CLI run again: it finds the same home through its environment.
  startShareSync(ctx.paths, ctx.name, qemu, {
    ...ctx.settings.hostEnv,
    STACK_EMULATOR_HOME: ctx.layout.home,
  });
  ctx.report.mark("config files shared");
  return true;
}

/** QEMU cannot save a guest with a 9p export mounted: before a save the share is unmounted, share-sync ended. */
export async function detachShare(ctx: Context): Promise<void> {
  const qga = await QgaClient.connect(ctx.paths.qgaSocket, { timeoutMs: 5000 });
  try {
    await unmountShare(qga);
  } finally {
    await qga.close().catch(() => undefined);
  }
  await stopShareSync(ctx.paths);
}
