import { contractServices } from "../contract/contract.js";
import { type Context, createContext } from "../core/context.js";
import type { Reporter } from "../core/report.js";
import type { Settings } from "../core/settings.js";
import type { Image } from "../image/image.js";
import type { ImageSelector } from "../image/image-store.js";
import type { StartOptions } from "./boot-inputs.js";
import { type AppConnection, appConnection } from "./connection.js";
import { reservedPorts } from "./home.js";
import { type Inspection, inspectInstance } from "./inspect.js";
import {
  capture,
  type ResetResult,
  reset,
  type StartResult,
  type StopMode,
  type StopResult,
  start,
  stop,
} from "./lifecycle.js";
import { assignPorts } from "./port-assignment.js";

/**
 * One emulator instance of a home: everything the CLI does to it goes through here (as Lima's pkg/instance),
 * with its settings read once by the CLI. `inspect` is the one answer to "is it running?".
 */
export class Instance {
  readonly ctx: Context;

  constructor(settings: Settings, report: Reporter, name = settings.instance) {
    this.ctx = createContext(settings, report, name);
  }

  get name(): string {
    return this.ctx.name;
  }

  get paths() {
    return this.ctx.paths;
  }

  /** Running, stopped or broken; with `probe`, the VM's run state and every service's health decide too. */
  inspect(options: { probe?: boolean } = {}): Promise<Inspection> {
    return inspectInstance(this.ctx, options);
  }

  /** The host port of every service for a start: the settings' ports over the instance's record (recorded). */
  async portPlan(): Promise<{ ports: Record<string, number>; note?: string }> {
    const { settings } = this.ctx;
    const plan = await assignPorts(
      this.paths,
      {
        services: contractServices(settings.portPrefix),
        given: settings.ports.given,
        instance: this.name,
        ...(settings.ports.mode ? { mode: settings.ports.mode } : {}),
        reserved: reservedPorts(settings.layout, this.name),
      },
      (message) => this.ctx.report.warn(message),
    );
    return { ports: plan.ports, ...(plan.note ? { note: plan.note } : {}) };
  }

  /** Boots `image` by the plan (resume the saved state, else the snapshot, else a cold boot), or finds it running. */
  async start(image: Image, selector: ImageSelector): Promise<StartResult> {
    const plan = await this.portPlan();
    if (plan.note) this.ctx.report.info(plan.note);
    return start(this.ctx, { image, selector, ports: plan.ports } satisfies StartOptions);
  }

  async capture(image: Image, selector: ImageSelector) {
    const plan = await this.portPlan();
    return capture(this.ctx, { image, selector, ports: plan.ports });
  }

  stop(mode: StopMode): Promise<StopResult> {
    return stop(this.ctx, mode);
  }

  reset(options: { images: boolean; force?: boolean }): Promise<ResetResult> {
    return reset(this.ctx, options);
  }

  /** How an app reaches the running instance: the internal project, or the project of `configFile`. */
  connection(configFile?: string): Promise<AppConnection> {
    return appConnection(this.ctx, configFile);
  }
}
