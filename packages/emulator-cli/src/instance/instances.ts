import { describeError } from "../core/errors.js";
import type { Reporter } from "../core/report.js";
import type { Settings } from "../core/settings.js";
import { instanceNames } from "./home.js";
import type { Inspection } from "./inspect.js";
import { Instance } from "./instance.js";
import type { StopMode, StopResult } from "./lifecycle.js";

/** Every instance of the home, inspected with its health. */
export function inspectAll(settings: Settings, report: Reporter): Promise<Inspection[]> {
  return Promise.all(
    instanceNames(settings.layout).map((name) =>
      new Instance(settings, report, name).inspect({ probe: true }),
    ),
  );
}

export type StopAllEntry = { instance: string } & (StopResult | { error: ReturnType<typeof describeError> });

/** Stops every instance of the home, one after the other (saving is disk-bound); one failure does not stop the rest. */
export async function stopAll(settings: Settings, report: Reporter, mode: StopMode): Promise<StopAllEntry[]> {
  const results: StopAllEntry[] = [];
  for (const name of instanceNames(settings.layout)) {
    try {
      results.push({ instance: name, ...(await new Instance(settings, report, name).stop(mode)) });
    } catch (error) {
      results.push({ instance: name, error: describeError(error) });
    }
  }
  return results;
}
