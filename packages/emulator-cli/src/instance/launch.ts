import type { RamSpec } from "../vm/qemu-args.js";
import { type Restore, Vm } from "../vm/vm.js";
import type { BootInputs } from "./boot-inputs.js";

/** Starts QEMU for a boot of `inputs` on `disk` (with `restore`, resumes that state); see Vm.launch. */
export function launchVm(
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
      services: inputs.services,
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
