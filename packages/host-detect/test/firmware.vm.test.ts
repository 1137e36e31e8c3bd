import { spawn } from "node:child_process";
import { copyFile } from "node:fs/promises";
import path from "node:path";
import { QmpClient } from "@stack/qmp";
import { expect, it } from "vitest";
import { findFirmware, findQemu } from "../src/index.js";
import { tempRoot } from "./helpers.js";

it("gives a code + vars pair that real QEMU accepts as q35 pflash and starts running", async () => {
  const firmware = await findFirmware("amd64", { onWarning: () => undefined });
  expect(firmware?.vars).toBeDefined();
  const { system } = await findQemu("amd64");
  const dir = await tempRoot();
  const vars = path.join(dir, "vars.fd");
  await copyFile(firmware!.vars!, vars); // each instance writes its own copy of the template
  const socket = path.join(dir, "qmp.sock");
  let stderr = "";
  const qemu = spawn(
    system,
    [
      ...["-machine", "q35", "-accel", "tcg", "-m", "128", "-nodefaults", "-display", "none"],
      ...["-drive", `if=pflash,format=${firmware!.format},readonly=on,file=${firmware!.code}`],
      ...["-drive", `if=pflash,format=${firmware!.format},file=${vars}`],
      ...["-qmp", `unix:${socket},server=on,wait=off`],
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  qemu.stderr.setEncoding("utf8").on("data", (chunk: string) => {
    stderr += chunk;
  });
  try {
    const client = await QmpClient.connect(socket, { timeoutMs: 60_000 });
    // QEMU checks the flash images' sizes and formats while building the machine, before QMP answers.
    expect(await client.execute<{ status: string }>("query-status")).toMatchObject({ status: "running" });
    await client.close();
  } catch (error) {
    throw new Error(`QEMU rejected the firmware: ${stderr}`, { cause: error });
  } finally {
    qemu.kill("SIGKILL");
  }
});
