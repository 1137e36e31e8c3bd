import { copyFile, cp, link, mkdir, rename, rm, stat } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import type { ImageCache } from "./cache.js";
import { type DownloadOptions, type DownloadResult, download } from "./download.js";
import { ArtifactsError, ioError } from "./errors.js";
import { fsyncDir, removeQuietly, tempSibling } from "./fsutil.js";
import type { ArtifactRef, GitHubClient, Release, ReleaseAsset } from "./github.js";
import { extractZipSafely, listFiles } from "./zip.js";

/** Download settings passed through to `download()`. */
export type TransferOptions = Pick<
  DownloadOptions,
  | "onProgress"
  | "onMessage"
  | "signal"
  | "stallTimeoutMs"
  | "retries"
  | "retryDelayMs"
  | "maxRateLimitWaitMs"
  | "connections"
  | "adaptive"
>;

export interface FetchReleaseAssetOptions extends TransferOptions {
  client: GitHubClient;
  release: Release;
  /** Exact asset name, or a pattern matching exactly one asset. */
  asset: string | RegExp;
  /** Where the file should end up. Optional when `cache` is given (the result then lives in the cache). */
  dest?: string;
  cache?: ImageCache;
  /** Decompress `.zst` assets while downloading (the result loses the `.zst` suffix). Default true. */
  decompress?: boolean;
}

export type Verification = "digest" | "checksums" | "none";

export interface FetchResult {
  path: string;
  /** SHA-256 of what was published (the compressed asset, the artifact zip). */
  sha256: string;
  /** How the download was checked: GitHub's digest, a checksums asset, or not at all. */
  verified: Verification;
  /** True when the cache already held the content and nothing was downloaded. */
  cached: boolean;
  /** What the download took; absent when nothing was downloaded. */
  transfer?: TransferStats;
}

export interface TransferStats {
  /** Bytes fetched over the network (less than the file when an earlier run's bytes were reused). */
  bytes: number;
  /** Bytes an earlier, interrupted run had fetched that this one kept. */
  resumed: number;
  seconds: number;
  /** The most connections open at once. */
  connections: number;
}

function statsOf(result: DownloadResult): TransferStats {
  return {
    bytes: result.fetchedBytes,
    resumed: result.resumedFrom,
    seconds: result.seconds,
    connections: result.connections,
  };
}

const CHECKSUM_ASSET = /^(sha256sums(\.txt)?|checksums(\.txt)?|sha256sum\.txt)$/i;

export async function fetchReleaseAsset(
  opts: FetchReleaseAssetOptions,
): Promise<FetchResult & { asset: ReleaseAsset }> {
  const { release, client } = opts;
  const asset = pickAsset(release, opts.asset);
  const decompress = opts.decompress !== false && asset.name.endsWith(".zst");
  const outName = decompress ? asset.name.slice(0, -".zst".length) : asset.name;
  const dest = resolveTarget(opts.dest, opts.cache);
  const twin = decompress ? release.assets.find((a) => a.name === outName) : undefined;

  let expected = asset.sha256;
  let verified: Verification = expected ? "digest" : "none";
  if (!expected) {
    expected = await checksumFromRelease(client, release, asset);
    if (expected) verified = "checksums";
  }
  if (verified === "none") {
    opts.onMessage?.(
      `${asset.name}: release ${release.tag} publishes neither a digest nor a SHA256SUMS entry for it, so the download is NOT verified.`,
    );
  }

  if (opts.cache && expected) {
    const hit = await opts.cache.lookup(expected);
    if (hit) {
      const path = await placeResult(join(hit, outName), dest);
      return { path, sha256: expected, verified, cached: true, asset };
    }
  }

  const staging = opts.cache ? await opts.cache.staging(expected ?? `asset-${asset.id}`) : undefined;
  const result = await download({
    ...transfer(opts),
    url: asset.url,
    dest: staging ? join(staging, outName) : dest!,
    headers: await client.downloadHeaders(),
    env: client.env,
    expectedBytes: asset.size,
    // The release says what a `.zst` unpacks to when it also publishes the uncompressed file.
    ...(twin ? { unpackedBytes: twin.size } : {}),
    // A `-latest` asset replaced under the same name gets a new id: its partial download is not continued.
    identity: `asset ${asset.id} ${asset.updatedAt}`,
    label: asset.name,
    ...(expected ? { expectedSha256: expected } : {}),
    ...(decompress ? { decompress: "zstd" as const } : {}),
  });
  const transferred = { sha256: result.sha256, verified, cached: false, transfer: statsOf(result), asset };
  if (!staging || !opts.cache) return { path: result.path, ...transferred };
  const entry = await opts.cache.commit(staging, result.sha256);
  const path = await placeResult(join(entry, outName), dest);
  return { path, ...transferred };
}

export interface FetchArtifactOptions extends TransferOptions {
  client: GitHubClient;
  artifact: ArtifactRef;
  /** Target path (a file for fetchArtifactFile, a directory for fetchArtifactDir). Optional with `cache`. */
  dest?: string;
  cache?: ImageCache;
}

export interface FetchArtifactFileOptions extends FetchArtifactOptions {
  /** The file inside the zip (after nested zips are expanded), by relative path, base name or pattern. Default: the only file. */
  file?: string | RegExp;
}

/** Downloads an artifact zip, verifies it, extracts it safely and returns one file of it; the zip is removed. */
export async function fetchArtifactFile(opts: FetchArtifactFileOptions): Promise<FetchResult> {
  const dest = resolveTarget(opts.dest, opts.cache);
  const tree = await artifactTree(opts);
  try {
    const chosen = join(tree.dir, pickFile(await listFiles(tree.dir), opts.file, opts.artifact.name));
    if (!dest) return { ...tree.result, path: chosen };
    if (tree.temporary) await moveInto(chosen, dest);
    else await placeResult(chosen, dest);
    return { ...tree.result, path: dest };
  } finally {
    if (tree.temporary) await removeQuietly(tree.temporary);
  }
}

/** Downloads an artifact zip, verifies it and extracts it (nested zips expanded) as the directory `dest`. */
export async function fetchArtifactDir(opts: FetchArtifactOptions): Promise<FetchResult> {
  const dest = resolveTarget(opts.dest, opts.cache);
  const tree = await artifactTree(opts);
  try {
    if (!dest) return { ...tree.result, path: tree.dir };
    let src = tree.dir;
    if (!tree.temporary) {
      // The cache entry must stay intact, so the destination gets a copy.
      src = tempSibling(dest);
      await cp(tree.dir, src, { recursive: true }).catch(async (err) => {
        await removeQuietly(src);
        throw ioError(err, `copying ${tree.dir}`);
      });
    }
    await replaceDir(src, dest);
    return { ...tree.result, path: dest };
  } finally {
    if (tree.temporary) await removeQuietly(tree.temporary);
  }
}

interface Tree {
  result: Omit<FetchResult, "path">;
  /** The extracted content: inside `temporary` when set (the caller may move it), else a cache entry. */
  dir: string;
  /** Working directory to remove once the caller has taken what it needs. */
  temporary?: string;
}

async function artifactTree(opts: FetchArtifactOptions): Promise<Tree> {
  const { artifact, client, cache } = opts;
  if (artifact.expired) throw expiredError(artifact);
  const expected = artifact.sha256;
  const verified: Verification = expected ? "digest" : "none";
  if (cache && expected) {
    const hit = await cache.lookup(expected);
    if (hit) return { dir: hit, result: { sha256: expected, verified, cached: true } };
  }
  if (!expected) {
    opts.onMessage?.(
      `Artifact ${artifact.name}: GitHub publishes no digest for it; the zip is checked only by its CRCs.`,
    );
  }
  const headers = await client.downloadHeaders(`Downloading the workflow artifact ${artifact.name}`);
  // A stable working directory, so that an interrupted zip download resumes on the next run.
  const work = cache
    ? await cache.staging(expected ?? `artifact-${artifact.id}`)
    : `${resolveTarget(opts.dest, cache)}.artifact-${artifact.id}`;
  const zipPath = join(work, "artifact.zip");
  const tree = join(work, "tree");
  const result = await download({
    ...transfer(opts),
    url: artifact.archiveDownloadUrl,
    dest: zipPath,
    headers,
    env: client.env,
    identity: `artifact ${artifact.id}`,
    label: `${artifact.name}.zip`,
    ...(artifact.sizeInBytes > 0 ? { expectedBytes: artifact.sizeInBytes } : {}),
    // Extracted next to the zip, which stays until the extraction is done.
    unpackedBeside: true,
    ...(expected ? { expectedSha256: expected } : {}),
  }).catch((err: unknown) => {
    // GitHub answers 410 Gone for an artifact that expired after it was listed.
    if (err instanceof ArtifactsError && err.status === 410) throw expiredError(artifact);
    throw err;
  });
  try {
    await rm(tree, { recursive: true, force: true });
    await extractZipSafely(zipPath, tree);
  } catch (err) {
    await removeQuietly(work);
    throw err;
  } finally {
    await removeQuietly(zipPath);
  }
  const summary = { sha256: result.sha256, verified, cached: false, transfer: statsOf(result) };
  if (!cache) return { result: summary, dir: tree, temporary: work };
  const entry = await cache.commit(tree, result.sha256);
  await removeQuietly(work);
  return { result: summary, dir: entry };
}

function expiredError(artifact: ArtifactRef): ArtifactsError {
  return new ArtifactsError(
    "ARTIFACT_EXPIRED",
    `Artifact ${artifact.name} of run ${artifact.runId} expired${artifact.expiresAt ? ` on ${artifact.expiresAt}` : ""}. Re-run the workflow to build a fresh one, then try again.`,
  );
}

function transfer(opts: TransferOptions): TransferOptions {
  const { onProgress, onMessage, signal, stallTimeoutMs, retries, retryDelayMs, maxRateLimitWaitMs } = opts;
  const { connections, adaptive } = opts;
  return Object.fromEntries(
    Object.entries({
      onProgress,
      onMessage,
      signal,
      stallTimeoutMs,
      retries,
      retryDelayMs,
      maxRateLimitWaitMs,
      connections,
      adaptive,
    }).filter(([, v]) => v !== undefined),
  ) as TransferOptions;
}

function resolveTarget(dest: string | undefined, cache: ImageCache | undefined): string | undefined {
  if (dest === undefined && cache === undefined) {
    throw new ArtifactsError("INVALID_ARGUMENT", "Give a destination path, a cache, or both.");
  }
  return dest === undefined ? undefined : resolve(dest);
}

function pickAsset(release: Release, wanted: string | RegExp): ReleaseAsset {
  const matches = release.assets.filter((a) =>
    typeof wanted === "string" ? a.name === wanted : wanted.test(a.name),
  );
  const names = release.assets.map((a) => a.name).join(", ") || "none";
  if (matches.length === 0) {
    throw new ArtifactsError(
      "NO_ASSET",
      `Release ${release.tag} has no asset ${typeof wanted === "string" ? JSON.stringify(wanted) : `matching ${wanted}`} (assets: ${names}). Pick another release or check the architecture.`,
    );
  }
  if (matches.length > 1) {
    throw new ArtifactsError(
      "INVALID_ARGUMENT",
      `Release ${release.tag} has several assets matching ${String(wanted)}: ${matches.map((a) => a.name).join(", ")}; be more specific.`,
    );
  }
  return matches[0]!;
}

function pickFile(files: string[], wanted: string | RegExp | undefined, artifact: string): string {
  const matches =
    wanted === undefined
      ? files
      : files.filter((f) =>
          typeof wanted === "string" ? f === wanted || basename(f) === wanted : wanted.test(f),
        );
  if (matches.length === 1) return matches[0]!;
  const listing = files.join(", ") || "no files";
  if (matches.length === 0) {
    throw new ArtifactsError(
      "NO_ARTIFACT",
      `Artifact ${artifact} holds no file ${wanted === undefined ? "" : `matching ${String(wanted)} `}(it holds: ${listing}).`,
    );
  }
  throw new ArtifactsError(
    "INVALID_ARGUMENT",
    `Artifact ${artifact} holds several files${wanted === undefined ? "" : ` matching ${String(wanted)}`} (${listing}); name the one you want.`,
  );
}

/** Parses `sha256sum` (`<hex>  <name>`, `<hex> *<name>`) and BSD (`SHA256 (<name>) = <hex>`) lines. */
export function parseChecksums(text: string): Map<string, string> {
  const sums = new Map<string, string>();
  for (const line of text.split(/\r?\n/)) {
    const gnu = /^([0-9a-fA-F]{64})\s+\*?(.+)$/.exec(line.trim());
    const bsd = /^SHA256\s*\((.+)\)\s*=\s*([0-9a-fA-F]{64})$/.exec(line.trim());
    if (gnu) sums.set(basename(gnu[2]!.trim()), gnu[1]!.toLowerCase());
    else if (bsd) sums.set(basename(bsd[1]!), bsd[2]!.toLowerCase());
  }
  return sums;
}

async function checksumFromRelease(
  client: GitHubClient,
  release: Release,
  asset: ReleaseAsset,
): Promise<string | undefined> {
  const sidecar = release.assets.find((a) => a.name === `${asset.name}.sha256`);
  const sums = sidecar ?? release.assets.find((a) => CHECKSUM_ASSET.test(a.name));
  if (!sums) return undefined;
  const text = (await client.readAsset(sums)).toString("utf8");
  if (sidecar) return /^([0-9a-fA-F]{64})\b/.exec(text.trim())?.[1]?.toLowerCase();
  return parseChecksums(text).get(asset.name);
}

/** Makes `src` (inside the cache) available at `dest` without duplicating it when the file system allows. */
async function placeResult(src: string, dest: string | undefined): Promise<string> {
  try {
    await stat(src);
  } catch (err) {
    throw ioError(err, `reading the cached ${src}`);
  }
  if (!dest || dest === src) return src;
  const tmp = tempSibling(dest);
  try {
    await mkdir(dirname(dest), { recursive: true });
    await link(src, tmp).catch(() => copyFile(src, tmp));
    await rename(tmp, dest);
    await fsyncDir(dirname(dest));
  } catch (err) {
    await removeQuietly(tmp);
    throw ioError(err, `placing ${dest}`);
  }
  return dest;
}

async function moveInto(src: string, dest: string): Promise<void> {
  try {
    await mkdir(dirname(dest), { recursive: true });
    await rename(src, dest);
    await fsyncDir(dirname(dest));
  } catch (err) {
    throw ioError(err, `moving ${src} to ${dest}`);
  }
}

/** Swaps a finished directory in: the old one, if any, is moved aside first and removed only after. */
async function replaceDir(src: string, dest: string): Promise<void> {
  const aside = tempSibling(dest);
  let movedAside = false;
  try {
    await mkdir(dirname(dest), { recursive: true });
    await rename(dest, aside).then(
      () => {
        movedAside = true;
      },
      (err: NodeJS.ErrnoException) => {
        if (err.code !== "ENOENT") throw err;
      },
    );
    await rename(src, dest);
    await fsyncDir(dirname(dest));
  } catch (err) {
    if (movedAside) await rename(aside, dest).catch(() => {});
    throw ioError(err, `moving the extracted artifact to ${dest}`);
  }
  await removeQuietly(aside);
}
