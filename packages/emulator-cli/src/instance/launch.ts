import { type ForwardedService, pickFreePort } from "../core/ports.js";
import type { RamSpec } from "../vm/qemu-args.js";
import { type Restore, Vm } from "../vm/vm.js";
import type { BootInputs } from "./boot-inputs.js";

/**
 * The services on ports of this start's own, free now and not the user's: what the VM is launched with. Health,
 * rotation and capture reach the guest through them; the user's ports are forwarded only at the handover, once the
 * guest holds this install's keys (Vm.publish), so nothing on them ever answers with the public placeholders.
 */
async function privatePorts(services: readonly ForwardedService[]): Promise<ForwardedService[]> {
  const taken = new Set(services.map((s) => s.hostPort));
  const result: ForwardedService[] = [];
  for (const service of services) {
    const hostPort = await pickFreePort(taken);
    taken.add(hostPort);
    result.push({ ...service, hostPort });
  }
  return result;
}

/** Starts QEMU for a boot of `inputs` on `disk` (with `restore`, resumes that state); see Vm.launch. */
export async function launchVm(
  inputs: BootInputs,
  disk: string,
  ram: RamSpec,
  restore?: Restore & { shareDevice?: boolean },
): Promise<Vm> {
  const { ctx } = inputs;
  return Vm.launch(
    {
      machine: inputs.resolved.machine,
      image: inputs.image,
      paths: ctx.paths,
      disk,
      services: await privatePorts(inputs.services),
      ram,
      incoming: Boolean(restore),
      shareDevice: Boolean(restore?.shareDevice),
    },
    {
      report: ctx.report,
      agentTimeoutMs: ctx.settings.timeouts.agentMs,
      ...(restore ? { restore } : {}),
    },
  );
}
