import type { HomeLayout } from "./paths.js";

export type Arch = "amd64" | "arm64";

/** `auto`: free ports, recorded with the instance and reused; `default`: the image's ports, forgetting a record. */
export type PortsMode = "auto" | "default";

/** A host port someone asked for, and where the request came from (a variable's name, for messages). */
export interface PortRequest {
  port: number;
  from: string;
}

/** What a command may download from: the image selector's flags and GitHub's coordinates. */
export interface PullSettings {
  repo: string;
  workflow: string;
  tag?: string;
  branch?: string;
  pr?: string;
  run?: string;
  arch?: Arch;
  /** How long a `-latest` release that is being re-uploaded may be waited for before a dated one is taken. */
  releaseWaitMs: number;
}

export interface Timeouts {
  /** A cold boot to healthy. */
  bootMs: number;
  /** The guest agent's first answer. */
  agentMs: number;
  /** A guest command and the health after a resume; undefined: the image's own value. */
  guestMs?: number;
  /** A clean power-down before QEMU is ended. */
  powerdownMs: number;
  /** A hardware-accelerated boot that prints nothing on its console. */
  kvmProgressMs: number;
  /** A hardware accelerator's proof guest. */
  accelProofMs: number;
}

/**
 * Everything a command is told, read once from its flags and the environment (cli/settings.ts, the one place that
 * reads either) and handed down. Precedence, as users expect of a CLI: a flag beats an environment variable, which
 * beats what the instance recorded, which beats the image's default; of this project's variable and the original's
 * for one setting, this project's wins.
 */
export interface Settings {
  layout: HomeLayout;
  instance: string;
  /** `--image` or STACK_EMULATOR_IMAGE; undefined: the pull flags, else the last image, else the default release. */
  image?: string;
  pull: PullSettings;
  ports: {
    /** `--ports`; `auto` makes every port automatic, ports given by variables included. */
    mode?: PortsMode;
    /** Ports given by variables, by service name (STACK_EMULATOR_BACKEND_PORT, or the original's name). */
    given: Record<string, PortRequest>;
  };
  /** The guest's port prefix (PORT_PREFIX, NEXT_PUBLIC_STACK_PORT_PREFIX, default 81). */
  portPrefix: string;
  /** The guest's RAM and vCPUs (EMULATOR_RAM, EMULATOR_CPUS); undefined: the image's. */
  machine: { memoryMiB?: number; cpus?: number };
  timeouts: Timeouts;
  /** STACK_EMULATOR_INSTANCE_RAM; undefined: by the guest's RAM size. */
  instanceRam?: "file" | "anonymous";
  /** STACK_EMULATOR_SNAPSHOT_METHOD; undefined: the best the host has. */
  snapshotMethod?: "x-ignore-shared" | "stream";
  noSnapshot: boolean;
  noRotation: boolean;
  /** STACK_EMULATOR_DEV_IMAGE_BUILDER; undefined: the guest/build-dev-image this package ships. */
  devImageBuilder?: string;
  /**
   * This process's environment, passed on whole, unread, to what takes one: host-detect (QEMU binaries, firmware,
   * the accelerator override), the GitHub client (token, API URL, proxy), the dev image builder, share-sync.
   */
  hostEnv: NodeJS.ProcessEnv;
}
