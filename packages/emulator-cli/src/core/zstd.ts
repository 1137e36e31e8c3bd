import { EmulatorError } from "./errors.js";

/** zstd-napi: a native addon, so an optional dependency (see the README's "Install"). */
export type Zstd = typeof import("zstd-napi");

/**
 * Loads zstd-napi when a zstd stream is about to be used, and only then: an install where the addon could not
 * compile runs everything else, and a normal start never pays for loading it. `needs` says what wanted it.
 */
export async function loadZstd(needs: string): Promise<Zstd> {
  try {
    return await import("zstd-napi");
  } catch (error) {
    throw new EmulatorError(
      "ZSTD_UNAVAILABLE",
      `${needs} needs zstd-napi, which cannot be loaded here: ${error instanceof Error ? error.message : String(error)}`,
      "zstd-napi is an optional dependency with a native addon that did not install on this machine (no prebuilt binary for it, and no compiler); install g++, make and python3 (Debian/Ubuntu: apt-get install g++ make python3), then install stack-emulator again",
      { cause: error },
    );
  }
}
