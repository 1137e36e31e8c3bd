import { QgaClient } from "@stack/qga";
import {
  type QmpClient,
  readsStateByPath,
  restoreVmState,
  type SaveMethod,
  type SaveResult,
  saveVmState,
} from "@stack/qmp";
import { EmulatorError } from "../core/errors.js";
import type { InstancePaths } from "../core/paths.js";
import type { ForwardedService } from "../core/ports.js";
import { isSameProcess, type ProcessIdentity } from "../core/process-identity.js";
import type { Reporter } from "../core/report.js";
import { checkNotInterrupted, type Ownership, ownLaunch } from "./owned.js";
import { type LaunchSpec, NETDEV_ID } from "./qemu-args.js";
import { connectQmp, INHERITED_STATE_FD, launchQemu, removeRuntimeFiles, terminate } from "./qemu-process.js";

/** A saved state to load into the new QEMU instead of booting. */
export interface Restore {
  method: SaveMethod;
  state: string;
  /** The RAM file is this instance's own and moves on with it (see restoreVmState). */
  ownsRamFile?: boolean;
}

export interface VmOptions {
  report: Reporter;
  /** How long the guest agent may take to answer a new connection. */
  agentTimeoutMs: number;
}

/**
 * A QEMU this command started, or one of an earlier start that it took over: its identity, its QMP connection and
 * its guest agent. Whoever holds it ends it (`end`) when something fails, or hands it on (`release`) once it is
 * healthy with this install's keys: each path through a command calls one of the two, in one `finally` or `catch`.
 * Until then this process owns it (owned.ts): an interrupt ends it.
 */
export class Vm {
  #earlyAgent: Promise<QgaClient> | undefined;
  #forwards: ForwardedService[];

  private constructor(
    readonly identity: ProcessIdentity,
    readonly qmp: QmpClient,
    private readonly paths: InstancePaths,
    private readonly options: VmOptions,
    forwards: ForwardedService[],
    /** This process's claim on a QEMU it launched; none for one it took over (attach). */
    private readonly ownership?: Ownership,
  ) {
    this.#forwards = forwards;
  }

  /** Starts QEMU for `spec`; with `restore`, loads that state and lets the guest run. A failure ends the QEMU. */
  static async launch(spec: LaunchSpec, options: VmOptions & { restore?: Restore }): Promise<Vm> {
    const { report, restore } = options;
    const ownership = ownLaunch(report);
    report.mark("launching QEMU");
    // Methods that stream the state can read it from a descriptor QEMU inherits; the others open it by path.
    const viaFd = restore && !readsStateByPath(restore.method);
    let identity: ProcessIdentity;
    try {
      identity = await launchQemu(spec, viaFd ? restore.state : undefined);
    } catch (error) {
      ownership.release();
      throw error;
    }
    const endUnconnected = async () => {
      await terminate(identity).catch(() => undefined);
      removeRuntimeFiles(spec.paths);
      ownership.release();
    };
    ownership.launched(identity, endUnconnected);
    report.mark("QEMU initialised");
    let qmp: QmpClient;
    try {
      checkNotInterrupted();
      qmp = await connectQmp(spec.paths);
    } catch (error) {
      await endUnconnected();
      throw error;
    }
    const vm = new Vm(identity, qmp, spec.paths, options, spec.services, ownership);
    ownership.launched(identity, () => vm.end());
    report.mark("QMP negotiated");
    if (!restore) return vm;
    try {
      // Connected before the guest runs: a guest saved with the agent's channel open (see save) finds it still
      // open and answers at once. A channel that opens after the resume is only noticed on the agent's next poll,
      // which qemu-ga makes every 100 ms while no host is connected.
      vm.openAgent();
      await restoreVmState(qmp, {
        method: restore.method,
        path: restore.state,
        ...(viaFd ? { fd: INHERITED_STATE_FD } : {}),
        ...(restore.ownsRamFile ? { ownsRamFile: true } : {}),
        timeoutMs: 60_000,
      });
      report.mark("state restored");
      await qmp.cont();
      report.mark("guest running");
      return vm;
    } catch (error) {
      await vm.end();
      throw error;
    }
  }

  /** Takes over the running QEMU of an earlier start; undefined when its control socket does not answer. */
  static async attach(
    paths: InstancePaths,
    identity: ProcessIdentity,
    options: VmOptions,
    forwards: ForwardedService[],
  ): Promise<Vm | undefined> {
    try {
      return new Vm(identity, await connectQmp(paths, 5000), paths, options, forwards);
    } catch {
      return undefined;
    }
  }

  get alive(): boolean {
    return isSameProcess(this.identity);
  }

  /** The host ports that reach the guest's services right now. */
  get forwards(): readonly ForwardedService[] {
    return this.#forwards;
  }

  /**
   * Forwards `services` (the user's ports) to the guest in place of the ports it was launched with: the handover.
   * A VM is launched on private ports, so that until its keys are this install's nothing reaches it on the user's.
   */
  async publish(services: ForwardedService[]): Promise<void> {
    const published: ForwardedService[] = [];
    for (const service of services) {
      try {
        await this.#hmp(
          `hostfwd_add ${NETDEV_ID} tcp:127.0.0.1:${service.hostPort}-:${service.guestPort}`,
          `forward host port ${service.hostPort} to the guest's ${service.name}`,
          (answer) => answer === "",
        );
        published.push(service);
      } catch (error) {
        // The emulator works without an optional service (mock OAuth on a port another instance holds).
        if (!service.optional) throw error;
        this.options.report.warn(`${(error as Error).message}; ${service.name} is not forwarded`);
      }
    }
    for (const service of this.#forwards) {
      if (published.some((s) => s.hostPort === service.hostPort)) continue;
      await this.#hmp(
        `hostfwd_remove ${NETDEV_ID} tcp:127.0.0.1:${service.hostPort}`,
        `drop the private port ${service.hostPort}`,
        (answer) => /removed/.test(answer),
      );
    }
    this.#forwards = published;
  }

  /** A monitor command without a QMP equivalent (slirp's port forwards): it answers as text, `ok` reads it. */
  async #hmp(commandLine: string, what: string, ok: (answer: string) => boolean): Promise<void> {
    const answer = (
      await this.qmp.execute<string>("human-monitor-command", { "command-line": commandLine })
    ).trim();
    if (!ok(answer)) {
      throw new EmulatorError(
        "PORT_IN_USE",
        `could not ${what}: ${answer}`,
        "another program took the port since the start began; free it, or start with --ports auto",
      );
    }
  }

  /** Starts connecting to the guest agent now (a booting guest's agent comes up with its services). */
  openAgent(timeoutMs = this.options.agentTimeoutMs): void {
    if (this.#earlyAgent) return;
    this.#earlyAgent = QgaClient.connect(this.paths.qgaSocket, { timeoutMs });
    // Awaited later, or never when the command fails first: its rejection must not count as unhandled.
    this.#earlyAgent.catch(() => undefined);
  }

  /** The early connection (handed out once, so nothing else closes it), else a new one. */
  #takeAgent(timeoutMs?: number): Promise<QgaClient> {
    const pending =
      this.#earlyAgent ??
      QgaClient.connect(this.paths.qgaSocket, {
        timeoutMs: timeoutMs ?? this.options.agentTimeoutMs,
      });
    this.#earlyAgent = undefined;
    return pending;
  }

  /** Runs `fn` with a guest agent connection, closed afterwards. */
  async withAgent<T>(fn: (qga: QgaClient) => Promise<T>, timeoutMs?: number): Promise<T> {
    // An early connection that failed is not retried: it already waited the whole agent timeout, or QEMU is gone.
    const qga = await this.#takeAgent(timeoutMs);
    this.options.report.mark("guest agent in sync");
    try {
      return await fn(qga);
    } finally {
      await qga.close().catch(() => undefined);
    }
  }

  /**
   * Pauses the guest and saves its state to `path`: the one save routine of a capture and a stop. The guest agent's
   * channel is held open meanwhile, so the saved guest waits on an open channel and answers a resume at once; an
   * agent that does not answer soon does not hold the save up (the resume then pays the agent's poll delay).
   */
  async save(method: SaveMethod, path: string): Promise<SaveResult> {
    const qga = await this.#takeAgent(2000).catch(() => undefined);
    try {
      await this.qmp.stop();
      return await saveVmState(this.qmp, { method, path, timeoutMs: 120_000 });
    } finally {
      await qga?.close().catch(() => undefined);
    }
  }

  /**
   * Ends QEMU (`quit`, then signals) and removes what it leaves behind: sockets, pid file. Never throws, so that it
   * can clean up after another failure; says whether QEMU is gone (only a process that survives SIGKILL is not).
   */
  async end(): Promise<boolean> {
    await terminate(this.identity, this.qmp).catch((error: Error) => this.options.report.warn(error.message));
    // Only now: a connection still waiting for the agent's answer fails as soon as QEMU is gone, where before it
    // would wait out its whole deadline (a cold boot's).
    await this.#earlyAgent?.then((qga) => qga.close()).catch(() => undefined);
    this.#earlyAgent = undefined;
    this.ownership?.release();
    // A QEMU that outlived SIGKILL keeps its pid file and sockets: they are how the next command finds it.
    if (this.alive) return false;
    removeRuntimeFiles(this.paths);
    return true;
  }

  /** Leaves QEMU running for the instance: this command's connections close, the VM stays. */
  async release(): Promise<void> {
    this.ownership?.release();
    await this.#earlyAgent?.then((qga) => qga.close()).catch(() => undefined);
    this.#earlyAgent = undefined;
    await this.qmp.close().catch(() => undefined);
  }
}
