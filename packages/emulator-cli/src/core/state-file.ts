import { readFileSync, renameSync } from "node:fs";
import { basename } from "node:path";
import * as v from "valibot";

/** Where a state file that does not read as its schema says is told about: one line, then the file is set aside. */
export type Warn = (message: string) => void;

/**
 * A state file of this CLI, checked against its schema: its value, or undefined when it is missing or unreadable.
 * With `warn` (a command that holds the instance), an unreadable one (a hand edit, a torn write, a version that
 * wrote it differently) is renamed to `<name>.unreadable` beside it with a one-line warning: the instance recovers by
 * its plan, the bytes stay there to look at, and they are never read again. Without, it is only passed over; so is
 * a file the system cannot read at all (its permissions, a failing disk): there is nothing to set aside then.
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
    // What was expected, never what was found: a state file may hold a secret (keys.env), and this is printed.
    const [issue] = result.issues;
    const where = issue ? v.getDotPath(issue) : undefined;
    problem = `${where ? `${where}: ` : ""}expected ${issue?.expected ?? "another value"}`;
  } catch {
    // A parser's message may quote the text; the set-aside file shows it to whoever looks.
    problem = "it does not parse";
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
