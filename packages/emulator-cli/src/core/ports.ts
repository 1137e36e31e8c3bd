import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import { createServer } from "node:net";
import * as v from "valibot";
import { EmulatorError } from "./errors.js";

export interface ServiceSpec {
  name: string;
  guestPort: number;
  defaultHostPort: number;
  portEnv?: string;
  health?: string;
  /** Forwarded from the host port of the same number, whatever the settings say (the guest names it to browsers). */
  sameHostPort?: boolean;
  /** Left unforwarded, with a note, when its host port is taken: the emulator works without it. */
  optional?: boolean;
}

export interface ForwardedService extends ServiceSpec {
  hostPort: number;
}

export const portSchema = v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(65535));

export const forwardedServiceSchema: v.GenericSchema<unknown, ForwardedService> = v.object({
  name: v.string(),
  guestPort: portSchema,
  defaultHostPort: portSchema,
  portEnv: v.optional(v.string()),
  health: v.optional(v.string()),
  sameHostPort: v.optional(v.boolean()),
  optional: v.optional(v.boolean()),
  hostPort: portSchema,
});

export function parsePort(value: string, source: string): number {
  const trimmed = value.trim();
  const port = /^\d+$/.test(trimmed) ? Number(trimmed) : Number.NaN;
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new EmulatorError(
      "INVALID_PORT",
      `${source}=${JSON.stringify(value)} is not a valid port`,
      "use a whole number from 1 to 65535",
    );
  }
  return port;
}

/**
 * The original CLI's name for a port variable (`EMULATOR_BACKEND_PORT` for `STACK_EMULATOR_BACKEND_PORT`), honoured
 * so its users can switch without renaming; this project's name wins when both are set.
 */
export function originalPortEnv(portEnv: string): string | undefined {
  return portEnv.startsWith("STACK_EMULATOR_") ? portEnv.slice("STACK_".length) : undefined;
}

/**
 * Each service with its host port: the one the port plan gives it (the image's default when it gives none), the
 * guest's own number for a service that must be reached on it.
 */
export function forwardServices(services: ServiceSpec[], ports: Record<string, number>): ForwardedService[] {
  const resolved = services.map((service) => ({
    ...service,
    hostPort: service.sameHostPort ? service.guestPort : (ports[service.name] ?? service.defaultHostPort),
  }));
  const seen = new Map<number, string>();
  for (const service of resolved) {
    const other = seen.get(service.hostPort);
    if (other) {
      throw new EmulatorError(
        "PORT_CONFLICT",
        `${other} and ${service.name} are both set to host port ${service.hostPort}`,
        "give each service its own port",
      );
    }
    seen.set(service.hostPort, service.name);
  }
  return resolved;
}

export function isPortFree(port: number): Promise<boolean> {
  return new Promise((resolvePromise) => {
    const server = createServer();
    server.unref();
    server.once("error", () => resolvePromise(false));
    server.listen({ port, host: "127.0.0.1", exclusive: true }, () => {
      server.close(() => resolvePromise(true));
    });
  });
}

/** A port the kernel considers free right now, not among `taken`. */
export async function pickFreePort(taken: ReadonlySet<number>): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((resolvePromise, reject) => {
      const server = createServer();
      server.once("error", reject);
      server.listen({ port: 0, host: "127.0.0.1", exclusive: true }, () => {
        const address = server.address();
        server.close(() => resolvePromise(typeof address === "object" && address ? address.port : 0));
      });
    });
    if (!taken.has(port)) return port;
  }
}

/**
 * The process listening on a local TCP port, as "pid N (command line)", on Linux: the socket's inode from
 * /proc/net/tcp{,6}, then the process holding that inode among its descriptors. Undefined when it cannot be told
 * (another OS, or a process this user may not inspect).
 */
export function describePortOwner(port: number, procRoot = "/proc"): string | undefined {
  const inodes = new Set<string>();
  for (const table of ["tcp", "tcp6"]) {
    let text: string;
    try {
      text = readFileSync(`${procRoot}/net/${table}`, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
      const fields = line.trim().split(/\s+/);
      const local = fields[1];
      if (
        local &&
        Number.parseInt(local.slice(local.lastIndexOf(":") + 1), 16) === port &&
        fields[3] === "0A"
      ) {
        if (fields[9] && fields[9] !== "0") inodes.add(`socket:[${fields[9]}]`);
      }
    }
  }
  if (inodes.size === 0) return undefined;
  for (const entry of readdirSync(procRoot)) {
    if (!/^\d+$/.test(entry)) continue;
    let fds: string[];
    try {
      fds = readdirSync(`${procRoot}/${entry}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      let target: string;
      try {
        target = readlinkSync(`${procRoot}/${entry}/fd/${fd}`);
      } catch {
        continue;
      }
      if (inodes.has(target)) {
        let command = "";
        try {
          command = readFileSync(`${procRoot}/${entry}/cmdline`, "utf8").split("\0").join(" ").trim();
        } catch {
          // Named by pid alone.
        }
        // Our own QEMU is named by its instance, which says more than its long command line.
        const instance = /\/instances\/([a-z0-9-]+)\/qemu\.pid\b/.exec(command)?.[1];
        if (instance) return `pid ${entry} (the QEMU of stack-emulator instance ${instance})`;
        return `pid ${entry}${command ? ` (${command.length > 120 ? `${command.slice(0, 117)}...` : command})` : ""}`;
      }
    }
  }
  return undefined;
}

/**
 * Checks every host port before QEMU starts, so a conflict is reported up front, by name and owner. An optional
 * service whose port is taken is left out, with a note saying what that costs; the services to forward remain.
 */
export async function checkPortsFree(
  services: ForwardedService[],
): Promise<{ services: ForwardedService[]; notes: string[] }> {
  const busy: ForwardedService[] = [];
  const notes: string[] = [];
  const forwarded: ForwardedService[] = [];
  for (const service of services) {
    if (await isPortFree(service.hostPort)) forwarded.push(service);
    else if (service.optional) {
      const owner = describePortOwner(service.hostPort);
      notes.push(
        `host port ${service.hostPort} (${service.name}) is taken${owner ? ` by ${owner}` : ""}: this instance runs without it, so OAuth sign-ins through the mock server do not work in a browser (another PORT_PREFIX gives it a port of its own)`,
      );
    } else busy.push(service);
  }
  const first = busy[0];
  if (first) {
    const owners = busy.map((s) => describePortOwner(s.hostPort));
    const names = busy.map(
      (s, i) =>
        `${s.name} on 127.0.0.1:${s.hostPort}${s.portEnv ? ` (${s.portEnv})` : ""}${owners[i] ? ` by ${owners[i]}` : ""}`,
    );
    const findOwner = owners.every(Boolean)
      ? "stop it"
      : `find the owner with \`lsof -i :${first.hostPort}\` and stop it`;
    throw new EmulatorError(
      "PORT_IN_USE",
      `port already in use: ${names.join(", ")}`,
      `${findOwner}, or start with \`--ports auto\` (free ports, kept for this instance) or the variable shown`,
    );
  }
  return { services: forwarded, notes };
}
