/** The libraries other repositories install, packed the way `pnpm publish` packs them. */
import { execFileSync } from "node:child_process";
import { join, resolve } from "node:path";

export const root = resolve(import.meta.dirname, "..");

export const LIBRARIES = ["iso9660", "qmp", "qga", "host-detect", "artifacts"] as const;
export type Library = (typeof LIBRARIES)[number];

export interface Tarball {
  library: Library;
  name: string;
  version: string;
  path: string;
}

/**
 * `pnpm pack`s each library's built `dist` into `dest`. pnpm turns `workspace:` ranges into the versions they
 * stand for, as `pnpm publish` does, so the tarballs are what a registry would serve.
 */
export function packLibraries(dest: string): Tarball[] {
  return LIBRARIES.map((library) => {
    const out = execFileSync("pnpm", ["pack", "--json", "--pack-destination", dest], {
      cwd: join(root, "packages", library),
      encoding: "utf8",
    });
    const packed = JSON.parse(out) as { name: string; version: string; filename: string };
    return { library, name: packed.name, version: packed.version, path: packed.filename };
  });
}
