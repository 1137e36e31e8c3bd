import { mkdirSync, renameSync } from "node:fs";
import { join } from "node:path";
import {
  ArtifactsError,
  createProgressRenderer,
  fetchArtifactFile,
  fetchReleaseAsset,
  formatBytes,
  GitHubClient,
  type Release,
} from "@stack/artifacts";
import type { Context } from "./context.js";
import { EmulatorError } from "./errors.js";
import { writeFileAtomic } from "./fs-atomic.js";
import { type Image, type ImageManifest, loadImage, SECRET_NAMES } from "./image.js";
import {
  archOf,
  type ImageSelector,
  imageName,
  type PullFlags,
  RELEASE_PREFIX,
  storedImageDir,
} from "./image-store.js";
import { commitStaging, createStaging, removeAbandonedStaging } from "./staging.js";

export const DEFAULT_REPO = "stack-auth/stack-auth";

/** The file name a published image's disk has, in releases and CI artifacts alike. */
export const diskFileName = (arch: string) => `stack-emulator-${arch}.qcow2`;

/**
 * The manifest of a published image, as guest/build-image writes it (a test keeps the two equal): a cloud image
 * that boots from its disk and serves the full stack. `name` is where this CLI stores it, so that every pulled
 * image has its own snapshot.
 */
export function releaseManifest(name: string, arch: "amd64" | "arm64", digest: string): ImageManifest {
  const service = (svc: string, guestPort: number, defaultHostPort: number, health?: string) => ({
    name: svc,
    guestPort,
    defaultHostPort,
    portEnv: `STACK_EMULATOR_${svc.toUpperCase().replaceAll("-", "_")}_PORT`,
    ...(health ? { health } : {}),
  });
  return {
    schema: 1,
    name,
    arch,
    digest,
    boot: { firmware: arch === "arm64" ? "uefi" : "bios" },
    disk: diskFileName(arch),
    memoryMiB: 4096,
    cpus: 4,
    configIso: { volumeId: "STACKCFG" },
    services: [
      service("dashboard", 8101, 26700, "/handler/sign-in"),
      service("backend", 8102, 26701, "/health?db=1"),
      service("minio", 8103, 26702, "/minio/health/live"),
      service("inbucket", 8104, 26703, "/"),
      service("mock-oauth", 8114, 26704),
    ],
    guest: {
      rotateSecrets: "/usr/local/bin/trigger-fast-rotate",
      applyConfig: "/usr/local/bin/apply-runtime-config",
      waitReady: "/usr/local/bin/wait-for-stack-ready",
    },
    secrets: [...SECRET_NAMES],
  };
}

/** Few quick retries for API calls: an offline machine should hear about it in seconds, not a minute. */
function github(ctx: Context): GitHubClient {
  return new GitHubClient({
    env: ctx.env,
    retries: 2,
    retryDelayMs: 500,
    onMessage: (message) => ctx.report.warn(message),
  });
}

async function pickRelease(client: GitHubClient, repo: string, tag: string | undefined): Promise<Release> {
  if (tag) return client.releaseByTag(repo, tag);
  const releases = (await client.listReleases(repo, { prefix: RELEASE_PREFIX })).filter(
    (r) => !r.draft && !r.prerelease,
  );
  const newest = releases.sort((a, b) =>
    (b.publishedAt ?? b.createdAt).localeCompare(a.publishedAt ?? a.createdAt),
  )[0];
  if (!newest) {
    throw new EmulatorError(
      "NO_IMAGE",
      `${repo} has no published ${RELEASE_PREFIX}* release`,
      "pick one with --tag (see `stack-emulator list-releases`), or start the offline dev image: stack-emulator start --image dev",
    );
  }
  return newest;
}

/** The release's disk asset: compressed when the release has that (smaller download), plain otherwise. */
function releaseAsset(release: Release, arch: string): string {
  const plain = diskFileName(arch);
  const names = new Set(release.assets.map((a) => a.name));
  if (names.has(`${plain}.zst`)) return `${plain}.zst`;
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
): Promise<{ sha256: string; verified: boolean }> {
  const progress = createProgressRenderer(process.stderr);
  const transfer = { onProgress: progress, onMessage: (message: string) => ctx.report.warn(message) };
  try {
    if (selector.kind === "release") {
      const release = await pickRelease(client, repo, selector.tag);
      ctx.report.info(`release ${release.tag} (${release.publishedAt ?? release.createdAt})`);
      const asset = releaseAsset(release, arch);
      const fetched = await fetchReleaseAsset({ ...transfer, client, release, asset, dest });
      return { sha256: fetched.sha256, verified: fetched.verified !== "none" };
    }
    const workflow = ctx.env.STACK_EMULATOR_WORKFLOW;
    const artifactName = new RegExp(`stack-emulator-${arch}`);
    const artifact =
      selector.kind === "pr"
        ? await client.pullRequestArtifact(repo, selector.number, {
            artifactName,
            ...(workflow ? { workflow } : {}),
          })
        : await client.runArtifact(repo, (selector as { id: number }).id, { artifactName });
    ctx.report.info(`artifact ${artifact.name} of run ${artifact.runId} (${artifact.headSha.slice(0, 12)})`);
    const fetched = await fetchArtifactFile({ ...transfer, client, artifact, dest, file: /\.qcow2$/ });
    return { sha256: fetched.sha256, verified: fetched.verified !== "none" };
  } finally {
    // Whatever is printed next must not land on the progress bar's line.
    progress.end();
  }
}

/**
 * Downloads the image a selector names and stores it with its manifest. The download lives under
 * `images/.downloads/` so an interrupted pull resumes; the image directory appears only once complete.
 */
export async function pullImage(ctx: Context, selector: ImageSelector, flags: PullFlags): Promise<Image> {
  const arch = archOf(flags);
  const repo = flags.repo ?? ctx.env.STACK_EMULATOR_REPO ?? DEFAULT_REPO;
  const name = imageName(selector, arch);
  const downloads = join(ctx.layout.images, ".downloads");
  mkdirSync(downloads, { recursive: true });
  const dest = join(downloads, `${name}.qcow2`);
  ctx.report.step(`fetching ${name} from ${repo}`);
  let fetched: { sha256: string; verified: boolean };
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
  return loadImage(storedImageDir(ctx.layout, name));
}

export interface ReleaseRow {
  tag: string;
  name: string;
  date: string;
  size: string;
  flags: string[];
  assets: string[];
}

export async function listReleases(ctx: Context, repo?: string): Promise<ReleaseRow[]> {
  const releases = await github(ctx).listReleases(repo ?? ctx.env.STACK_EMULATOR_REPO ?? DEFAULT_REPO, {
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
