import { treeFromDirectory } from "./fromdir.js";
import { writeTree } from "./image.js";
import { layout } from "./layout.js";
import { type IsoOptions, resolveOptions } from "./options.js";
import { type IsoEntry, treeFromEntries } from "./tree.js";
import { bufferSink, writePlan } from "./write.js";

export { IsoError, type IsoErrorCode } from "./errors.js";
export type { IsoLevel } from "./names.js";
export type { IsoOptions } from "./options.js";
export type { FileContent, IsoEntry } from "./tree.js";

/** Writes an image of `entries` (files, directories, symlinks; missing parent directories are created). */
export async function writeIsoFromEntries(
  entries: IsoEntry[],
  output: string | NodeJS.WritableStream,
  options?: IsoOptions,
): Promise<{ bytes: number }> {
  const resolved = resolveOptions(options);
  return writeTree(treeFromEntries(entries, resolved.date), output, resolved);
}

/** Writes an image of the directory `dir`'s contents (which become the image root). */
export async function writeIsoFromDirectory(
  dir: string,
  output: string | NodeJS.WritableStream,
  options?: IsoOptions,
): Promise<{ bytes: number }> {
  const resolved = resolveOptions(options);
  const tree = treeFromDirectory(dir, { date: resolved.date, clampMtime: resolved.fixedDate });
  return writeTree(tree, output, resolved);
}

/** Builds a small image (a config or cloud-init seed disk) in memory. */
export async function buildIso(entries: IsoEntry[], options?: IsoOptions): Promise<Buffer> {
  const resolved = resolveOptions(options);
  const plan = layout(treeFromEntries(entries, resolved.date), resolved);
  const sink = bufferSink(plan.totalSectors * 2048);
  await writePlan(plan, sink);
  return sink.result;
}
