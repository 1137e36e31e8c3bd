export { ImageCache } from "./cache.js";
export { type DownloadOptions, type DownloadResult, download } from "./download.js";
export { ArtifactsError, type ArtifactsErrorCode } from "./errors.js";
export {
  type FetchArtifactFileOptions,
  type FetchArtifactOptions,
  type FetchReleaseAssetOptions,
  type FetchResult,
  fetchArtifactDir,
  fetchArtifactFile,
  fetchReleaseAsset,
  parseChecksums,
  type TransferOptions,
  type TransferStats,
  type Verification,
} from "./fetch.js";
export {
  type ArtifactQuery,
  type ArtifactRef,
  GitHubClient,
  type GitHubClientOptions,
  type PullRequestArtifactQuery,
  type Release,
  type ReleaseAsset,
} from "./github.js";
export {
  createProgressRenderer,
  formatBytes,
  formatDuration,
  type Progress,
  type ProgressRenderer,
  type ProgressStream,
  type RendererOptions,
} from "./progress.js";
export type { RetryOptions } from "./retry.js";
export { discoverToken } from "./token.js";
