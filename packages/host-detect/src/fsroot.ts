import { accessSync, constants, statSync } from "node:fs";
import { access, stat } from "node:fs/promises";
import path from "node:path";

/** Resolves an absolute host path under `root`, the stand-in for `/` that tests use. */
export function underRoot(root: string | undefined, p: string): string {
  if (root === undefined || root === "/") return p;
  return path.join(root, p.replace(/^[A-Za-z]:/, ""));
}

export async function isExecutableFile(p: string): Promise<boolean> {
  try {
    if (!(await stat(p)).isFile()) return false;
    await access(p, process.platform === "win32" ? constants.F_OK : constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

export function isExecutableFileSync(p: string): boolean {
  try {
    if (!statSync(p).isFile()) return false;
    accessSync(p, process.platform === "win32" ? constants.F_OK : constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

export async function isFile(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isFile();
  } catch {
    return false;
  }
}

/** The directories of a PATH value, honouring Windows' `Path` spelling and separator. */
export function pathDirs(env: NodeJS.ProcessEnv, os: string): string[] {
  const value = env.PATH ?? env.Path ?? "";
  return value.split(os === "windows" ? ";" : ":").filter((d) => d !== "");
}
