import { execFile } from "node:child_process";

const ghTokens = new Map<string, Promise<string | undefined>>();

/**
 * The token `gh` itself would use: GH_TOKEN, then GITHUB_TOKEN, then `gh auth token` for the API's host.
 * `gh` is run at most once per process (per PATH and host): it is slow and its answer does not change.
 */
export function discoverToken(
  apiUrl: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<string | undefined> {
  const fromEnv = env.GH_TOKEN?.trim() || env.GITHUB_TOKEN?.trim();
  if (fromEnv) return Promise.resolve(fromEnv);
  const apiHost = new URL(apiUrl).host;
  const hostname = apiHost === "api.github.com" ? "github.com" : apiHost;
  const key = `${env.PATH ?? ""}\0${hostname}`;
  let pending = ghTokens.get(key);
  if (!pending) {
    pending = new Promise((resolve) => {
      execFile("gh", ["auth", "token", "--hostname", hostname], { env, timeout: 10_000 }, (err, stdout) => {
        // No gh, or not logged in: carry on without a token; calls that need one say how to provide it.
        const token = err ? "" : String(stdout).trim();
        resolve(token || undefined);
      });
    });
    ghTokens.set(key, pending);
  }
  return pending;
}
