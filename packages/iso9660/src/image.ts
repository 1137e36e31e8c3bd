import { IsoError } from "./errors.js";
import { layout } from "./layout.js";
import type { ResolvedOptions } from "./options.js";
import type { DirNode } from "./tree.js";
import { fileSink, type Sink, streamSink, writePlan } from "./write.js";

/** Lays out `tree`, then writes it; a path output appears only once complete. */
export async function writeTree(
  tree: DirNode,
  output: string | NodeJS.WritableStream,
  options: ResolvedOptions,
): Promise<{ bytes: number }> {
  const plan = layout(tree, options);
  let sink: Sink;
  if (typeof output === "string") sink = await fileSink(output);
  else if (output !== null && typeof output === "object" && typeof output.write === "function")
    sink = await streamSink(output);
  else throw new IsoError("INVALID_OPTION", "The output must be a file path or a writable stream.");
  return { bytes: await writePlan(plan, sink) };
}
