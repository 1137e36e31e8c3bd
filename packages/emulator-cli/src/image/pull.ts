import { mkdirSync, renameSync } from "node:fs";
import { join } from "node:path";
import {
  ArtifactsError,
  createProgressRenderer,
  type FetchResult,
  fetchArtifactFile,
  fetchReleaseAsset,
  formatBytes,
  GitHubClient,
  type Release,
} from "@stack/artifacts";
import type { Context } from "../core/context.js";
import { EmulatorError, isEmulatorError } from "../core/errors.js";
import { writeFileAtomic } from "../core/fs-atomic.js";
import { commitStaging, createStaging, removeAbandonedStaging } from "../core/staging.js";
import { loadZstd } from "../core/zstd.js";
import { type DownloadedFile, describeFile, type PulledImage, summary } from "./download-report.js";
import { type ImageManifest, loadImage } from "./image.js";
import {
  archOf,
  type ImageSelector,
  imageName,
  type PullFlags,
  RELEASE_PREFIX,
  storedImageDir,
} from "./image-store.js";

export const DEFAULT_BRANCH = "dev";

/** The file name a published image's disk has, in releases and CI artifacts alike. */
export const diskFileName = (arch: string) => `stack-emulator-${arch}.qcow2`;
/** The name of a CI build's artifact: a zip holding diskFileName(arch). */
export const artifactName = (arch: string) => `qemu-emulator-${arch}`;

/**
 * The manifest of a published image: a bare qcow2 that boots from its disk through firmware (SeaBIOS on q35, UEFI on
 * virt), with the original's 4096 MiB and 4 vCPUs. `name` is where this CLI stores it, so that every pulled image
 * has its own snapshot.
 */
export function releaseManifest(name: string, arch: "amd64" | "arm64", digest: string): ImageManifest {
  return {
    schema: 2,
    name,
    arch,
    digest,
    boot: { firmware: arch === "arm64" ? "uefi" : "bios" },
    disk: diskFileName(arch),
    memoryMiB: 4096,
    cpus: 4,
  };
}

/** Few quick retries for API calls: an offline machine should hear about it in seconds, not a minute. */
function github(ctx: Context): GitHubClient {
  return new GitHubClient({
    env: ctx.settings.hostEnv,
    retries: 2,
    retryDelayMs: 500,
    onMessage: (message) => ctx.report.warn(message),
  });
}

/** `emulator-<branch>-latest`: the tag the original's workflow updates in place on every build of a branch. */
export const latestTag = (branch: string) => `${RELEASE_PREFIX}${branch}-latest`;
/** `emulator-<branch>-<yyyymmdd>-<sha8>`: one per build, never changed after. */
function isDatedTag(tag: string, branch: string): boolean {
  const prefix = `${RELEASE_PREFIX}${branch}-`;
  return tag.startsWith(prefix) && /^\d{8}-[0-9a-f]{8}$/.test(tag.slice(prefix.length));
}

function hasAsset(release: Release, arch: string): boolean {
  const plain = diskFileName(arch);
  return release.assets.some((a) => a.name === plain || a.name === `${plain}.zst`);
}

/**
 * The release a selector names. Every `emulator-*` release is a prerelease (so GitHub's "latest" is none of them);
 * the default is the branch's `-latest` tag. That one is re-uploaded in place by each build, briefly a draft
 * (invisible) or without its asset: then this waits a little, and if it does not come back takes the newest dated
 * release of the branch instead, which is never changed.
 */
async function pickRelease(
  ctx: Context,
  client: GitHubClient,
  repo: string,
  selector: { tag?: string },
  arch: string,
): Promise<Release> {
  const tag = selector.tag ?? latestTag(DEFAULT_BRANCH);
  const branch = /^emulator-(.+)-latest$/.exec(tag)?.[1];
  if (branch === undefined) return client.releaseByTag(repo, tag);
  const waitMs = ctx.settings.pull.releaseWaitMs;
  const deadline = Date.now() + waitMs;
  const delayMs = Math.min(5000, waitMs / 3);
  for (;;) {
    const release = await client.releaseByTag(repo, tag).catch((error: unknown) => {
      if (error instanceof ArtifactsError && error.code === "NO_RELEASE") return undefined;
      throw error;
    });
    if (release && !release.draft && hasAsset(release, arch)) return release;
    if (Date.now() + delayMs > deadline) break;
    ctx.report.warn(
      `release ${tag} ${release ? `has no ${diskFileName(arch)} right now` : "is not published right now"} (a build may be re-uploading it); trying again in ${(delayMs / 1000).toFixed(1)} s`,
    );
    await new Promise((r) => setTimeout(r, delayMs));
  }
  const newest = (await client.listReleases(repo, { prefix: RELEASE_PREFIX }))
    .filter((r) => isDatedTag(r.tag, branch) && !r.draft && hasAsset(r, arch))
    .sort((a, b) => (b.publishedAt ?? b.createdAt).localeCompare(a.publishedAt ?? a.createdAt))[0];
  if (!newest) {
    throw new EmulatorError(
      "NO_IMAGE",
      `${repo} has no ${tag} release with ${diskFileName(arch)}, and no dated ${RELEASE_PREFIX}${branch}-* release either`,
      "pick one with --tag (see `stack-emulator list-releases`) or --branch, or start the offline dev image: stack-emulator start --image dev",
    );
  }
  ctx.report.warn(`release ${tag} is unavailable; using the newest build of ${branch}, ${newest.tag}`);
  return newest;
}

/**
 * The release's disk asset: compressed when the release has that (smaller download) and zstd-napi, an optional
 * dependency, is installed; plain otherwise. A release with only the compressed disk needs zstd-napi.
 */
async function releaseAsset(ctx: Context, release: Release, arch: string): Promise<string> {
  const plain = diskFileName(arch);
  const names = new Set(release.assets.map((a) => a.name));
  if (names.has(`${plain}.zst`)) {
    try {
      await loadZstd(`downloading ${plain}.zst of release ${release.tag}`);
      return `${plain}.zst`;
    } catch (error) {
      if (!names.has(plain) || !isEmulatorError(error, "ZSTD_UNAVAILABLE")) throw error;
      ctx.report.warn(`${error.message}; downloading the uncompressed ${plain} instead`);
    }
  }
  if (names.has(plain)) return plain;
  throw new EmulatorError(
    "NO_IMAGE",
    `release ${release.tag} has no ${plain} (assets: ${[...names].join(", ") || "none"})`,
    `pick a release that publishes one for ${arch}: stack-emulator list-releases`,
  );
}

/** Downloads (resumably, verified) the disk of the image a selector names; returns its digest. */
async function fetchDisk(
  ctx: Context,
  client: GitHubClient,
  repo: string,
  selector: ImageSelector,
  arch: string,
  dest: string,
): Promise<{ sha256: string; verified: boolean; files: DownloadedFile[] }> {
  const output = ctx.report.progressOutput();
  const progress = output ? createProgressRenderer(output) : undefined;
  const transfer = {
    ...(progress ? { onProgress: progress } : {}),
    onMessage: (message: string) => ctx.report.warn(message),
  };
  const done = (fetched: FetchResult, files: DownloadedFile[]) => {
    for (const file of files) ctx.report.info(summary(file));
    return { sha256: fetched.sha256, verified: fetched.verified !== "none", files };
  };
  try {
    if (selector.kind === "release") {
      const release = await pickRelease(ctx, client, repo, selector, arch);
      ctx.report.info(`release ${release.tag} (${release.publishedAt ?? release.createdAt})`);
      const asset = await releaseAsset(ctx, release, arch);
      const fetched = await fetchReleaseAsset({ ...transfer, client, release, asset, dest });
      return done(fetched, describeFile(fetched.asset.name, fetched.asset.size, fetched));
    }
    const { workflow } = ctx.settings.pull;
    const query = { artifactName: artifactName(arch) };
    const artifact =
      selector.kind === "pr"
        ? await client.pullRequestArtifact(repo, selector.number, { ...query, workflow })
        : await client.runArtifact(repo, (selector as { id: number }).id, query);
    ctx.report.info(`artifact ${artifact.name} of run ${artifact.runId} (${artifact.headSha.slice(0, 12)})`);
    const file = new RegExp(`(^|/)${diskFileName(arch).replaceAll(".", "\\.")}$`);
    const fetched = await fetchArtifactFile({ ...transfer, client, artifact, dest, file });
    return done(fetched, describeFile(`${artifact.name}.zip`, artifact.sizeInBytes, fetched));
  } finally {
    // Whatever is printed next must not land on the progress bar's line.
    progress?.end();
  }
}

/**
 * Downloads the image a selector names and stores it with its manifest. The download lives under
 * `images/.downloads/` so an interrupted pull resumes; the image directory appears only once complete.
 */
export async function pullImage(
  ctx: Context,
  selector: ImageSelector,
  flags: PullFlags,
): Promise<PulledImage> {
  const arch = archOf(flags);
  const { repo } = ctx.settings.pull;
  const name = imageName(selector, arch);
  const downloads = join(ctx.layout.images, ".downloads");
  mkdirSync(downloads, { recursive: true });
  const dest = join(downloads, `${name}.qcow2`);
  ctx.report.step(`fetching ${name} from ${repo}`);
  let fetched: Awaited<ReturnType<typeof fetchDisk>>;
  try {
    fetched = await fetchDisk(ctx, github(ctx), repo, selector, arch, dest);
  } catch (error) {
    if (error instanceof ArtifactsError && error.code === "NETWORK") {
      throw new EmulatorError(
        "NO_IMAGE",
        `no image could be downloaded: ${error.message}`,
        "start the offline dev image instead: stack-emulator start --image dev",
        { cause: error },
      );
    }
    throw error;
  }
  if (!fetched.verified)
    ctx.report.warn(`${name}: the publisher gave no checksum, so the download was not verified`);
  removeAbandonedStaging(ctx.layout.images);
  const staging = createStaging(ctx.layout.images);
  renameSync(dest, join(staging, diskFileName(arch)));
  writeFileAtomic(
    join(staging, "image.json"),
    `${JSON.stringify(releaseManifest(name, arch, `sha256:${fetched.sha256}`), null, 2)}\n`,
  );
  commitStaging(staging, storedImageDir(ctx.layout, name));
  return { image: loadImage(storedImageDir(ctx.layout, name)), download: { files: fetched.files } };
}

export interface ReleaseRow {
  tag: string;
  name: string;
  date: string;
  size: string;
  flags: string[];
  assets: string[];
}

export async function listReleases(ctx: Context): Promise<ReleaseRow[]> {
  const releases = await github(ctx).listReleases(ctx.settings.pull.repo, {
    prefix: RELEASE_PREFIX,
  });
  return releases.map((r) => ({
    tag: r.tag,
    name: r.name,
    date: r.publishedAt ?? r.createdAt,
    size: formatBytes(r.size),
    flags: [r.latest && "latest", r.draft && "draft", r.prerelease && "prerelease"].filter((f): f is string =>
      Boolean(f),
    ),
    assets: r.assets.map((a) => a.name),
  }));
}
