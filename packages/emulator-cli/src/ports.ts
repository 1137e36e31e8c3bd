import { createServer } from "node:net";
import { EmulatorError } from "./errors.js";

export interface ServiceSpec {
  name: string;
  guestPort: number;
  defaultHostPort: number;
  portEnv?: string;
  health?: string;
}

export interface ForwardedService extends ServiceSpec {
  hostPort: number;
}

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

/** The variable that sets a service's port, and its value: this project's name first, then the original's. */
function portFromEnv(
  service: ServiceSpec,
  env: NodeJS.ProcessEnv,
): { name: string; value: string } | undefined {
  if (!service.portEnv) return undefined;
  for (const name of [service.portEnv, originalPortEnv(service.portEnv)]) {
    const value = name === undefined ? undefined : env[name];
    if (name !== undefined && value !== undefined && value !== "") return { name, value };
  }
  return undefined;
}

/** Host ports for each service: the service's environment variable when set, else its default. */
export function resolveServicePorts(services: ServiceSpec[], env: NodeJS.ProcessEnv): ForwardedService[] {
  const resolved = services.map((service) => {
    const fromEnv = portFromEnv(service, env);
    const hostPort = fromEnv ? parsePort(fromEnv.value, fromEnv.name) : service.defaultHostPort;
    return { ...service, hostPort };
  });
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

function isPortFree(port: number): Promise<boolean> {
  return new Promise((resolvePromise) => {
    const server = createServer();
    server.unref();
    server.once("error", () => resolvePromise(false));
    server.listen({ port, host: "127.0.0.1", exclusive: true }, () => {
      server.close(() => resolvePromise(true));
    });
  });
}

/** Checks every host port before QEMU starts, so a conflict is reported up front and by name. */
export async function assertPortsFree(services: ForwardedService[]): Promise<void> {
  const busy: ForwardedService[] = [];
  for (const service of services) {
    if (!(await isPortFree(service.hostPort))) busy.push(service);
  }
  const first = busy[0];
  if (first) {
    const names = busy.map(
      (s) => `${s.name} on 127.0.0.1:${s.hostPort}${s.portEnv ? ` (${s.portEnv})` : ""}`,
    );
    throw new EmulatorError(
      "PORT_IN_USE",
      `port already in use: ${names.join(", ")}`,
      `find the owner with \`lsof -i :${first.hostPort}\` and stop it, or pick another port with the variable shown`,
    );
  }
}
