import { chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach } from "vitest";

const created: string[] = [];

afterEach(async () => {
  await Promise.all(created.splice(0).map((dir) => rm(dir, { recursive: true, force: true })));
});

/** A fresh directory standing in for `/`, readable by other users so `nobody` can look inside it too. */
export async function tempRoot(): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), "host-detect-test-"));
  await chmod(dir, 0o755);
  created.push(dir);
  return dir;
}

export async function put(
  root: string,
  file: string,
  content: string | Buffer,
  mode = 0o644,
): Promise<string> {
  const full = path.join(root, file);
  await mkdir(path.dirname(full), { recursive: true, mode: 0o755 });
  await writeFile(full, content);
  await chmod(full, mode);
  return full;
}

/** A shell script posing as QEMU; `$1` is its first argument. */
export function script(body: string): string {
  return `#!/bin/sh\n${body}\n`;
}

export const REAL_QEMU = "/usr/bin/qemu-system-x86_64";
