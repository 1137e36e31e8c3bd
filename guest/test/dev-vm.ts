import { type ChildProcess, execFile, spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import { createServer } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { buildIso } from "@stack/iso9660";
import {
  CONFIG_VOLUME_ID,
  configDiskFiles,
  contractServices,
  internalClientHeaders,
} from "../../packages/emulator-cli/src/contract/contract.js";

/** Building and booting the dev image the way guest/README.md documents it; shared by the test and the benchmark. */
const run = promisify(execFile);
const BUILDER = fileURLToPath(new URL("../build-dev-image", import.meta.url));

export type Service = "dashboard" | "backend" | "minio" | "inbucket" | "mock-oauth";

export interface BuildResult {
  path: string;
  digest: string;
  cached: boolean;
}

export interface Manifest {
  schema: number;
  name: string;
  arch: string;
  digest: string;
  boot: { kernel: string; initrd: string; append: string };
  disk: string;
  memoryMiB: number;
  cpus: number;
}

export async function buildDevImage(out: string, extraArgs: string[] = []): Promise<BuildResult> {
  const { stdout } = await run(BUILDER, ["--out", out, "--json", ...extraArgs], {
    maxBuffer: 16 * 1024 * 1024,
  });
  const lines = stdout.trim().split("\n");
  return JSON.parse(lines[lines.length - 1] ?? "") as BuildResult;
}

export async function readManifest(imageDir: string): Promise<Manifest> {
  return JSON.parse(await readFile(join(imageDir, "image.json"), "utf8")) as Manifest;
}

/**
 * A config disk as the CLI writes it (docs/guest-contract.md, section 1): volume id STACKCFG, runtime.env with the
 * prefix and the host ports, and the base.env the CLI ships.
 */
export function configIso(prefix: string, hostPorts: Partial<Record<Service, number>>): Promise<Buffer> {
  const forwarded = contractServices(prefix).map((s) => ({
    ...s,
    hostPort: hostPorts[s.name as Service] ?? s.defaultHostPort,
  }));
  const { files } = configDiskFiles(prefix, forwarded);
  return buildIso(
    Object.entries(files).map(([path, content]) => ({ type: "file" as const, path, content })),
    { volumeId: CONFIG_VOLUME_ID },
  );
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  await new Promise((resolve) => server.close(resolve));
  if (address === null || typeof address === "string") throw new Error("no TCP port");
  return address.port;
}

export interface DevVm {
  qemu: ChildProcess;
  exited: Promise<unknown>;
  ports: Record<Service, number>;
  qgaSocket: string;
  qmpSocket: string;
  serialLog: string;
  url(service: Service, path: string): string;
  /** The status of one request; a short timeoutMs suits polling. */
  status(service: Service, path: string, key?: string, timeoutMs?: number): Promise<number>;
  waitHealthy(timeoutMs: number): Promise<void>;
  kill(): Promise<void>;
}

export interface BootOptions {
  imageDir: string;
  /** Holds the sockets and the serial log (and the overlay, unless one is given). */
  dir: string;
  isoPath: string;
  /** An existing overlay to boot from (a resume must use the disk its RAM state belongs to). */
  overlay?: string;
  /** Appended to the command line: a memory backend, `-incoming defer -S`, ... */
  extraArgs?: string[];
  /** The guest's port prefix, as on its config disk (default 81). */
  prefix?: string;
  /** A directory QEMU exports as 9p `hostfs` once a virtio-9p-pci device is hot-plugged into root port hostfs-port. */
  shareDir?: string;
}

/**
 * Starts QEMU (TCG) on the image with an overlay on its disk and the given config ISO file, in `dir`, with free
 * host ports. Resolves once QEMU is spawned; use waitHealthy for the guest.
 */
export async function bootDevImage(opts: BootOptions): Promise<DevVm> {
  const { imageDir, dir, isoPath } = opts;
  const manifest = await readManifest(imageDir);
  const overlay = opts.overlay ?? join(dir, "overlay.qcow2");
  if (!opts.overlay) {
    const base = join(imageDir, manifest.disk);
    await run("qemu-img", ["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base, overlay]);
  }
  const services = contractServices(opts.prefix ?? "81");
  const ports = {} as Record<Service, number>;
  for (const service of services) ports[service.name as Service] = await freePort();
  const qgaSocket = join(dir, "qga.sock");
  const qmpSocket = join(dir, "qmp.sock");
  const serialLog = join(dir, "serial.log");
  const forwards = services
    .map((s) => `hostfwd=tcp:127.0.0.1:${ports[s.name as Service]}-:${s.guestPort}`)
    .join(",");
  const qemu = spawn(
    "qemu-system-x86_64",
    [
      ...["-accel", "tcg", "-cpu", "max", "-machine", "q35", "-nodefaults", "-display", "none"],
      ...["-m", String(manifest.memoryMiB), "-smp", String(manifest.cpus)],
      ...["-kernel", join(imageDir, manifest.boot.kernel), "-initrd", join(imageDir, manifest.boot.initrd)],
      ...["-append", manifest.boot.append],
      ...["-drive", `file=${overlay},if=virtio,format=qcow2`],
      ...["-drive", `file=${isoPath},if=virtio,media=cdrom,readonly=on,format=raw`],
      ...["-netdev", `user,id=net0,${forwards}`, "-device", "virtio-net-pci,netdev=net0"],
      ...["-device", "virtio-serial", "-chardev", `socket,id=qga0,path=${qgaSocket},server=on,wait=off`],
      ...["-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0"],
      ...["-device", "vmgenid", "-qmp", `unix:${qmpSocket},server=on,wait=off`],
      ...["-device", "pcie-root-port,id=hostfs-port,chassis=1"],
      ...(opts.shareDir ? ["-fsdev", `local,id=hostfs,path=${opts.shareDir},security_model=none`] : []),
      ...["-serial", `file:${serialLog}`],
      ...(opts.extraArgs ?? []),
    ],
    { stdio: ["ignore", "ignore", "inherit"] },
  );
  const exited = new Promise((resolve) => qemu.once("exit", resolve));
  const url = (service: Service, path: string) => `http://127.0.0.1:${ports[service]}${path}`;

  async function status(service: Service, path: string, key?: string, timeoutMs = 30_000): Promise<number> {
    const headers: Record<string, string> = key === undefined ? {} : internalClientHeaders(key);
    const response = await fetch(url(service, path), { headers, signal: AbortSignal.timeout(timeoutMs) });
    await response.arrayBuffer();
    return response.status;
  }

  async function waitHealthy(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        // Short attempts: a connection made before the guest's network is up waits out slirp's SYN retransmit
        // backoff (seconds), while a fresh one succeeds as soon as the guest listens.
        if ((await status("backend", "/health?db=1", undefined, 2_000)) === 200) return;
      } catch {
        // not listening yet
      }
      if (qemu.exitCode !== null) throw new Error(`QEMU exited early; see ${serialLog}`);
      if (Date.now() > deadline) throw new Error(`the backend did not become healthy; see ${serialLog}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  async function kill(): Promise<void> {
    qemu.kill("SIGKILL");
    await exited;
  }

  return { qemu, exited, ports, qgaSocket, qmpSocket, serialLog, url, status, waitHealthy, kill };
}
