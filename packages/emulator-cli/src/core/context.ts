import { type HomeLayout, type InstancePaths, instancePaths } from "./paths.js";
import type { Reporter } from "./report.js";
import type { Settings } from "./settings.js";

/** What every operation on an instance works with: its settings, where its files are, where progress goes. */
export interface Context {
  layout: HomeLayout;
  name: string;
  paths: InstancePaths;
  settings: Settings;
  report: Reporter;
}

/** The context for an instance of the settings' home: the settings' own instance unless `name` says another. */
export function createContext(settings: Settings, report: Reporter, name = settings.instance): Context {
  return { layout: settings.layout, name, paths: instancePaths(settings.layout, name), settings, report };
}

export const msSince = (since: number) => Date.now() - since;
