import { EmulatorError } from "../core/errors.js";
import type { AppConnection } from "../instance/connection.js";

export type { AppConnection };

/** Framework prefixes that expose a variable to browser code; the secret server key never gets one. */
const PUBLIC_PREFIXES = {
  next: "NEXT_PUBLIC_",
  vite: "VITE_",
  expo: "EXPO_PUBLIC_",
} as const;

export type PrefixSet = keyof typeof PUBLIC_PREFIXES | "none" | "all";
export const PREFIX_SETS: readonly PrefixSet[] = [
  "all",
  "none",
  ...Object.keys(PUBLIC_PREFIXES),
] as PrefixSet[];

export function parsePrefixSet(value: string): PrefixSet {
  if ((PREFIX_SETS as readonly string[]).includes(value)) return value as PrefixSet;
  throw new EmulatorError(
    "INVALID_ARGUMENT",
    `unknown prefix set ${JSON.stringify(value)}`,
    `use one of: ${PREFIX_SETS.join(", ")}`,
  );
}

/**
 * The variables for an app: the public values under the plain STACK_ names and under each framework prefix of the
 * set (`all`: every prefix), the secret server key only under its plain name, so no bundler ships it to a browser.
 */
export function composeAppEnv(
  connection: AppConnection,
  prefixes: PrefixSet = "all",
): Record<string, string> {
  const publicValues = {
    STACK_PROJECT_ID: connection.projectId,
    STACK_PUBLISHABLE_CLIENT_KEY: connection.publishableClientKey,
    STACK_API_URL: connection.apiUrl,
  };
  const namePrefixes =
    prefixes === "all"
      ? ["", ...Object.values(PUBLIC_PREFIXES)]
      : prefixes === "none"
        ? [""]
        : [PUBLIC_PREFIXES[prefixes]];
  const variables: Record<string, string> = {};
  for (const prefix of namePrefixes) {
    for (const [name, value] of Object.entries(publicValues)) variables[`${prefix}${name}`] = value;
  }
  variables.STACK_SECRET_SERVER_KEY = connection.secretServerKey;
  return variables;
}

/**
 * `KEY="value"` lines that both dotenv parsers and a POSIX shell's `eval` read back unchanged: inside double quotes
 * the shell still expands `$`, backquotes and backslashes, so those are escaped.
 */
export function formatDotenv(env: Record<string, string>): string {
  return Object.entries(env)
    .map(([name, value]) => `${name}="${value.replace(/[\\"$`]/g, "\\$&")}"\n`)
    .join("");
}
