import { readdir, rm } from "node:fs/promises";
import { isAbsolute, join, posix } from "node:path";
import extract from "extract-zip";
import { ArtifactsError, ioError } from "./errors.js";

const S_IFMT = 0o170000;
const S_IFLNK = 0o120000;
const MAX_NESTING = 3;

/** Rejects entries that could write outside the target directory: `..`, absolute paths and symlinks. */
export function unsafeEntryReason(fileName: string, externalFileAttributes: number): string | undefined {
  if (fileName.includes("\\")) return "contains a backslash";
  if (isAbsolute(fileName) || /^[a-zA-Z]:/.test(fileName)) return "is an absolute path";
  if (fileName.split("/").includes("..")) return "climbs out of the target directory";
  // A symlink could point anywhere; a later entry written through it would escape the directory.
  if (((externalFileAttributes >>> 16) & S_IFMT) === S_IFLNK) return "is a symbolic link";
  return undefined;
}

/**
 * Extracts `zipPath` into `dir`, refusing unsafe entries before anything is written for them, then expands any
 * zip found inside (an uploaded zip is wrapped in the artifact zip) into a directory named after it.
 */
export async function extractZipSafely(zipPath: string, dir: string, depth = 0): Promise<void> {
  try {
    await extract(zipPath, {
      dir,
      onEntry: (entry) => {
        const reason = unsafeEntryReason(entry.fileName, entry.externalFileAttributes);
        if (reason) {
          throw new ArtifactsError(
            "UNSAFE_ZIP",
            `Refusing to extract ${zipPath}: entry ${JSON.stringify(entry.fileName)} ${reason}. The artifact is not safe to unpack; nothing outside the temporary directory was written.`,
          );
        }
      },
    });
  } catch (err) {
    throw zipError(err, zipPath);
  }
  if (depth >= MAX_NESTING) return;
  for (const nested of await findZips(dir)) {
    await extractZipSafely(nested, nested.slice(0, -".zip".length), depth + 1);
    await rm(nested, { force: true });
  }
}

function zipError(err: unknown, zipPath: string): ArtifactsError {
  if (err instanceof ArtifactsError) return err;
  const message = err instanceof Error ? err.message : String(err);
  // yauzl validates names itself and reports unsafe ones with these phrases.
  if (/invalid relative path|absolute path|invalid characters|Out of bound path/i.test(message)) {
    return new ArtifactsError("UNSAFE_ZIP", `Refusing to extract ${zipPath}: ${message}.`, { cause: err });
  }
  if ((err as NodeJS.ErrnoException).code?.startsWith("E")) return ioError(err, `extracting ${zipPath}`);
  return new ArtifactsError(
    "ZIP_FAILED",
    `Could not extract ${zipPath}: ${message}. The download may be damaged; run the command again.`,
    { cause: err },
  );
}

async function findZips(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries
    .filter((e) => e.isFile() && e.name.toLowerCase().endsWith(".zip"))
    .map((e) => join(e.parentPath ?? e.path, e.name));
}

/** Every regular file under `dir`, as paths relative to it with `/` separators. */
export async function listFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries
    .filter((e) => e.isFile())
    .map((e) =>
      posix.join(
        ...join(e.parentPath ?? e.path, e.name)
          .slice(dir.length + 1)
          .split(/[\\/]/),
      ),
    )
    .sort();
}
