import { readFileSync, renameSync } from "node:fs";
import { basename } from "node:path";
import * as v from "valibot";

/** Where a state file that does not read as its schema says is told about: one line, then the file is set aside. */
export type Warn = (message: string) => void;

/**
 * A state file of this CLI, checked against its schema: its value, or undefined when it is missing or unreadable.
 * With `warn` (a command that holds the instance), an unreadable one (a hand edit, a disk error, a version that
 * wrote it differently) is renamed to `<name>.unreadable` beside it with a one-line warning: the instance recovers by
 * its plan, the bytes stay there to look at, and they are never read again. Without, it is only passed over.
 */
export function readStateFile<T>(
  path: string,
  schema: v.GenericSchema<unknown, T>,
  options: { warn?: Warn | undefined; parse?: (text: string) => unknown; aside?: string } = {},
): T | undefined {
  const { warn, parse = JSON.parse, aside = `${path}.unreadable` } = options;
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
  let problem: string;
  try {
    const result = v.safeParse(schema, parse(text));
    if (result.success) return result.output;
    const [issue] = result.issues;
    const where = issue ? v.getDotPath(issue) : undefined;
    problem = `${where ? `${where}: ` : ""}${issue?.message ?? "does not match"}`;
  } catch (error) {
    problem = (error as Error).message;
  }
  if (!warn) return undefined;
  try {
    renameSync(path, aside);
    warn(`${path} is unreadable (${problem}); set aside as ${basename(aside)}`);
  } catch {
    warn(`${path} is unreadable (${problem})`);
  }
  return undefined;
}
