import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { EmulatorError } from "../core/errors.js";
import { packageFile } from "../core/package-files.js";
import type { ForwardedService, ServiceSpec } from "../core/ports.js";

/**
 * The guest contract of the images stack-auth publishes, which our own images speak too: docs/guest-contract.md
 * says where each of these comes from in the original. Nothing here depends on which image is booted.
 */

/** Volume id of the runtime config disk the guest looks for (`/dev/disk/by-label/STACKCFG`). */
export const CONFIG_VOLUME_ID = "STACKCFG";

/** The internal project's four secrets, in the names `trigger-fast-rotate` reads on its stdin. */
export const SECRET_NAMES = [
  "STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY",
  "STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY",
  "STACK_SEED_INTERNAL_PROJECT_SUPER_SECRET_ADMIN_KEY",
  "CRON_SECRET",
] as const;
export const [PUBLISHABLE_KEY_NAME, SERVER_KEY_NAME] = SECRET_NAMES;

/** The project the four secrets belong to, in every image. */
export const INTERNAL_PROJECT_ID = "internal";

/** How the original's CLI authenticates to the backend: a client of the internal project, by its publishable key. */
export function internalClientHeaders(publishableKey: string): Record<string, string> {
  return {
    "x-stack-project-id": INTERNAL_PROJECT_ID,
    "x-stack-access-type": "client",
    "x-stack-publishable-client-key": publishableKey,
  };
}

/** The public placeholder of the publishable key that every image bakes in (32 zeros, 32 f). */
export const PLACEHOLDER_PUBLISHABLE_KEY = `${"0".repeat(32)}${"f".repeat(32)}`;

/** Guest programs the host runs through the agent. */
export const GUEST = {
  rotateSecrets: "/usr/local/bin/trigger-fast-rotate",
  mountHostFs: "/usr/local/bin/mount-host-fs",
  shell: "/bin/sh",
} as const;

/**
 * Re-reads the config disk and restarts the app with what it says, through the image's own service: `stack.service`
 * runs `render-stack-env`, which mounts the config disk only where it is not mounted yet, so the stale mount (and
 * the block device's cached pages) go first. A restarted app starts from the image's placeholder keys again.
 */
export const REAPPLY_CONFIG_SCRIPT =
  'dev=$(readlink -f /dev/disk/by-label/STACKCFG); umount /mnt/stack-runtime 2>/dev/null; blockdev --flushbufs "$dev" 2>/dev/null; exec systemctl restart stack.service';

/** The app's own log: the container's output goes to the journal of `stack.service` when no host log is set. */
export const appLogScript = (lines: number) =>
  `journalctl -u stack.service -o cat --no-pager -n ${Math.trunc(lines)}`;

/** The 9p share a config file reaches the guest through: tag, QEMU ids, and the reserved PCIe root port. */
export const SHARE = {
  tag: "hostfs",
  fsdevId: "hostfs",
  deviceId: "hostfs-dev",
  rootPortId: "hostfs-port",
  guestMount: "/host",
} as const;

export const DEFAULT_PORT_PREFIX = "81";

/** A port prefix as `name` gives it: the guest's ports are `${prefix}01` and so on, so each must be a valid port. */
export function parsePortPrefix(value: string, name: string): string {
  if (!/^[1-9][0-9]{0,2}$/.test(value) || Number(`${value}14`) > 65535) {
    throw new EmulatorError(
      "INVALID_PORT",
      `${name}=${JSON.stringify(value)} is not a port prefix`,
      "use 1 to 655 (the guest's ports are the prefix followed by 01, 02 and 14; the default is 81)",
    );
  }
  return value;
}

/**
 * The services a guest serves, with the prefix's guest ports. The mock OAuth server has the same port on both sides,
 * because the guest tells browsers `localhost:${prefix}14`; it is not health-checked.
 */
export function contractServices(prefix: string): ServiceSpec[] {
  const service = (
    name: string,
    guestPort: number,
    defaultHostPort: number,
    health: string,
  ): ServiceSpec => ({
    name,
    guestPort,
    defaultHostPort,
    portEnv: `STACK_EMULATOR_${name.toUpperCase()}_PORT`,
    health,
  });
  const mockOAuth = Number(`${prefix}14`);
  return [
    service("dashboard", Number(`${prefix}01`), 26700, "/handler/sign-in"),
    service("backend", Number(`${prefix}02`), 26701, "/health?db=1"),
    service("minio", 9090, 26702, "/minio/health/live"),
    service("inbucket", 9001, 26703, "/"),
    {
      name: "mock-oauth",
      guestPort: mockOAuth,
      defaultHostPort: mockOAuth,
      sameHostPort: true,
      optional: true,
    },
  ];
}

/** The app settings every guest gets (`base.env`), as shipped with this CLI. */
export function baseEnv(): string {
  return readFileSync(packageFile("assets/base.env"), "utf8");
}

/**
 * `runtime.env`: the prefix and the host ports the guest builds browser URLs from. `STACK_EMULATOR_VM_DIR_HOST` is
 * always empty: the guest never writes into the host outside the shared config files.
 */
export function runtimeEnv(prefix: string, services: ForwardedService[]): string {
  const hostPort = (name: string) => services.find((s) => s.name === name)?.hostPort ?? "";
  return [
    `STACK_EMULATOR_PORT_PREFIX=${prefix}`,
    `STACK_EMULATOR_DASHBOARD_HOST_PORT=${hostPort("dashboard")}`,
    `STACK_EMULATOR_BACKEND_HOST_PORT=${hostPort("backend")}`,
    `STACK_EMULATOR_MINIO_HOST_PORT=${hostPort("minio")}`,
    `STACK_EMULATOR_INBUCKET_HOST_PORT=${hostPort("inbucket")}`,
    "STACK_EMULATOR_VM_DIR_HOST=",
    "",
  ].join("\n");
}

/** The config disk's files, and a hash that changes whenever what the guest would render from them does. */
export function configDiskFiles(
  prefix: string,
  services: ForwardedService[],
): { files: Record<string, string>; hash: string } {
  const files = { "runtime.env": runtimeEnv(prefix, services), "base.env": baseEnv() };
  const hash = createHash("sha256")
    .update(JSON.stringify(Object.entries(files)))
    .digest("hex");
  return { files, hash };
}
