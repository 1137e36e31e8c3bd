import { realpathSync, statSync } from "node:fs";
import { resolve } from "node:path";
import { internalClientHeaders } from "../contract/contract.js";
import { EmulatorError } from "../core/errors.js";

export interface ConfigProject {
  project_id: string;
  publishable_client_key: string;
  secret_server_key: string;
}

/**
 * The config file's canonical absolute path: the backend keys projects by it, so editing the config keeps its project
 * (and data) while two checkouts get one each. Symlinks are resolved so two spellings of one file share a project.
 */
export function configFileIdentity(configFile: string): string {
  const path = resolve(configFile);
  try {
    if (statSync(path).isFile()) return realpathSync(path);
  } catch {
    // Reported below, with what to do.
  }
  throw new EmulatorError(
    "CONFIG_FILE_NOT_FOUND",
    `no config file at ${path}`,
    "pass the path of your project's config file to --config-file",
  );
}

/**
 * Creates the project for a config file (its canonical path, configFileIdentity) through the backend, or returns the
 * one made for it before: the original CLI's request, as a client of the internal project with its publishable key
 * (docs/guest-contract.md, section 5). The backend reads the file at `/host<path>`, so it must be shared first.
 */
export async function ensureConfigProject(
  backendUrl: string,
  internalPublishableKey: string,
  configFile: string,
): Promise<ConfigProject> {
  const url = `${backendUrl}/api/v1/internal/local-emulator/project`;
  let response: Response;
  try {
    response = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json", ...internalClientHeaders(internalPublishableKey) },
      body: JSON.stringify({ absolute_file_path: configFile }),
      signal: AbortSignal.timeout(30_000),
    });
  } catch (error) {
    if (error instanceof EmulatorError) throw error;
    throw new EmulatorError(
      "BACKEND_UNREACHABLE",
      `the backend did not answer at ${url}: ${(error as Error).message}`,
      "check `stack-emulator status`; `stack-emulator start` brings it back",
    );
  }
  const text = await response.text();
  const project = parseProject(text);
  if (!response.ok || !project) {
    // The body of a failure carries no keys; a success's body is never echoed.
    throw new EmulatorError(
      "PROJECT_FAILED",
      `the backend refused to create the config file's project (HTTP ${response.status}${response.ok ? "" : `: ${text.slice(0, 200)}`})`,
      response.status === 401
        ? "keys.env is not the running backend's: `stack-emulator stop --no-save && stack-emulator start` boots with fresh keys, keeping the data"
        : "see `stack-emulator logs`",
    );
  }
  return project;
}

function parseProject(text: string): ConfigProject | undefined {
  try {
    const { project_id, publishable_client_key, secret_server_key } = JSON.parse(text);
    if ([project_id, publishable_client_key, secret_server_key].every((v) => typeof v === "string" && v)) {
      return { project_id, publishable_client_key, secret_server_key };
    }
  } catch {
    // Not a project: reported by the caller.
  }
  return undefined;
}
