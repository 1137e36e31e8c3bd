import { ArtifactsError } from "./errors.js";
import { type FollowedResponse, getFollowing, headerValue, nextLink, readBody } from "./http.js";
import { Http1Agent } from "./http1.js";
import { proxyFor } from "./proxy.js";
import { failureFor, type RetryOptions, retrying } from "./retry.js";
import { discoverToken } from "./token.js";

export interface GitHubClientOptions extends RetryOptions {
  /** Default: GITHUB_API_URL, else https://api.github.com. */
  apiUrl?: string;
  /** A token; `null` for none; undefined to discover one (GH_TOKEN, GITHUB_TOKEN, `gh auth token`). */
  token?: string | null;
  userAgent?: string;
  /** Environment for GITHUB_API_URL, token discovery and HTTPS_PROXY/NO_PROXY. Default process.env. */
  env?: NodeJS.ProcessEnv;
  /** Per-request stall timeout. Default 30 000 ms. */
  stallTimeoutMs?: number;
}

export interface ReleaseAsset {
  id: number;
  name: string;
  size: number;
  /** API URL; download it with `Accept: application/octet-stream`. */
  url: string;
  browserDownloadUrl: string;
  contentType: string;
  /** Lowercase hex SHA-256 published by GitHub (assets uploaded since mid-2025); undefined for older assets. */
  sha256?: string;
  updatedAt: string;
}

export interface Release {
  id: number;
  tag: string;
  name: string;
  draft: boolean;
  prerelease: boolean;
  /** The repository's "latest" release. */
  latest: boolean;
  createdAt: string;
  publishedAt?: string;
  htmlUrl: string;
  assets: ReleaseAsset[];
  /** Sum of the asset sizes. */
  size: number;
}

export interface ArtifactRef {
  id: number;
  name: string;
  repo: string;
  runId: number;
  headSha: string;
  sizeInBytes: number;
  /** Lowercase hex SHA-256 of the zip when GitHub publishes one. */
  sha256?: string;
  expired: boolean;
  expiresAt?: string;
  /** API URL of the zip; needs a token even for public repositories. */
  archiveDownloadUrl: string;
}

interface ApiAsset {
  id: number;
  name: string;
  size: number;
  url: string;
  browser_download_url: string;
  content_type: string;
  digest?: string | null;
  updated_at: string;
}
interface ApiRelease {
  id: number;
  tag_name: string;
  name: string | null;
  draft: boolean;
  prerelease: boolean;
  created_at: string;
  published_at: string | null;
  html_url: string;
  assets: ApiAsset[];
}
interface ApiRun {
  id: number;
  head_sha: string;
  conclusion: string | null;
  status: string | null;
  created_at: string;
  head_repository?: { full_name: string } | null;
}
interface ApiArtifact {
  id: number;
  name: string;
  size_in_bytes: number;
  archive_download_url: string;
  expired: boolean;
  expires_at: string | null;
  digest?: string | null;
  workflow_run?: { id: number; head_sha: string } | null;
}

export interface ArtifactQuery {
  /** Exact artifact name, or a pattern. */
  artifactName: string | RegExp;
}

export interface PullRequestArtifactQuery extends ArtifactQuery {
  /** Workflow file name (`ci.yml`) or id; default: runs of any workflow. */
  workflow?: string;
}

const REPO = /^[\w.-]+\/[\w.-]+$/;

export class GitHubClient {
  readonly apiUrl: string;
  /** The environment the client reads its settings from; downloads take their proxy settings from it too. */
  readonly env: NodeJS.ProcessEnv;
  private readonly userAgent: string;
  private readonly agent: Http1Agent;
  private tokenPromise: Promise<string | undefined> | undefined;

  constructor(private readonly opts: GitHubClientOptions = {}) {
    this.env = opts.env ?? process.env;
    const env = this.env;
    this.agent = new Http1Agent({ proxyFor: (url) => proxyFor(url, env) });
    this.apiUrl = (opts.apiUrl ?? (this.env.GITHUB_API_URL || "https://api.github.com")).replace(/\/+$/, "");
    this.userAgent = opts.userAgent ?? "stack-artifacts";
    if (opts.token !== undefined) this.tokenPromise = Promise.resolve(opts.token ?? undefined);
  }

  /** The token in use, discovered on first need. */
  token(): Promise<string | undefined> {
    this.tokenPromise ??= discoverToken(this.apiUrl, this.env);
    return this.tokenPromise;
  }

  /**
   * Headers for downloading an asset or artifact zip from the API (`download()` keeps the Authorization header
   * away from the object-storage origin). `requiredFor` names what needs a token: without one, MISSING_TOKEN.
   */
  async downloadHeaders(requiredFor?: string): Promise<Record<string, string>> {
    const token = await this.token();
    if (!token && requiredFor) {
      throw new ArtifactsError(
        "MISSING_TOKEN",
        `${requiredFor} needs a GitHub token, even for a public repository. Set GH_TOKEN (or GITHUB_TOKEN), or run \`gh auth login\`.`,
      );
    }
    return {
      accept: "application/octet-stream",
      "user-agent": this.userAgent,
      "x-github-api-version": "2022-11-28",
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    };
  }

  /** A small asset (a checksums file) read into memory. */
  async readAsset(asset: ReleaseAsset, maxBytes = 1 << 20): Promise<Buffer> {
    if (asset.size > maxBytes) {
      throw new ArtifactsError(
        "INVALID_ARGUMENT",
        `${asset.name} is ${asset.size} bytes; too large to read into memory.`,
      );
    }
    return (await this.get(new URL(asset.url), asset.name, "application/octet-stream", maxBytes)).body;
  }

  /** All releases, newest first, optionally only those whose tag or name starts with `prefix`. */
  async listReleases(repo: string, opts: { prefix?: string } = {}): Promise<Release[]> {
    checkRepo(repo);
    // Both requests settle before returning: a failure of one must not leave the other running (and retrying).
    const [listed, latestSettled] = await Promise.allSettled([
      this.getAll<ApiRelease>(`/repos/${repo}/releases`, undefined, `releases of ${repo}`),
      this.latestId(repo),
    ]);
    if (listed.status === "rejected") throw listed.reason;
    if (latestSettled.status === "rejected") throw latestSettled.reason;
    const releases = listed.value;
    const latest = latestSettled.value;
    const prefix = opts.prefix;
    return releases
      .filter((r) => !prefix || r.tag_name.startsWith(prefix) || (r.name ?? "").startsWith(prefix))
      .map((r) => toRelease(r, r.id === latest));
  }

  async releaseByTag(repo: string, tag: string): Promise<Release> {
    checkRepo(repo);
    const what = `release ${tag} of ${repo}`;
    const release = await this.getJsonOr404<ApiRelease>(
      `/repos/${repo}/releases/tags/${encodeURIComponent(tag)}`,
      what,
    );
    if (!release) {
      throw new ArtifactsError(
        "NO_RELEASE",
        `${repo} has no release tagged ${tag}. List the available ones with \`list-releases\` (or check the tag).`,
      );
    }
    return toRelease(release, release.id === (await this.latestId(repo)));
  }

  async latestRelease(repo: string): Promise<Release> {
    checkRepo(repo);
    const release = await this.getJsonOr404<ApiRelease>(
      `/repos/${repo}/releases/latest`,
      `latest release of ${repo}`,
    );
    if (!release) {
      throw new ArtifactsError(
        "NO_RELEASE",
        `${repo} has no published release yet; pass a tag or a pull request.`,
      );
    }
    return toRelease(release, true);
  }

  /**
   * The artifact built for a pull request's current head commit: the PR's head SHA (not its branch name, which
   * forks can share), then the newest successful run for that SHA that still holds a matching, unexpired artifact.
   */
  async pullRequestArtifact(repo: string, pr: number, opts: PullRequestArtifactQuery): Promise<ArtifactRef> {
    checkRepo(repo);
    const pull = await this.getJsonOr404<{ head: { sha: string; repo: { full_name: string } | null } }>(
      `/repos/${repo}/pulls/${pr}`,
      `pull request #${pr} of ${repo}`,
    );
    if (!pull) throw new ArtifactsError("NOT_FOUND", `${repo} has no pull request #${pr}; check the number.`);
    const sha = pull.head.sha;
    const headRepo = pull.head.repo?.full_name;
    const fork = headRepo !== undefined && headRepo.toLowerCase() !== repo.toLowerCase();
    if (fork)
      this.opts.onMessage?.(`Pull request #${pr} comes from the fork ${headRepo}; using its head ${sha}.`);
    const base = opts.workflow
      ? `/repos/${repo}/actions/workflows/${encodeURIComponent(opts.workflow)}/runs`
      : `/repos/${repo}/actions/runs`;
    const runs = (
      await this.getAll<ApiRun>(
        `${base}?head_sha=${sha}&status=success`,
        "workflow_runs",
        `workflow runs of ${repo}`,
      )
    )
      .filter((r) => r.head_sha === sha && r.conclusion === "success")
      .sort((a, b) => b.created_at.localeCompare(a.created_at));
    const workflow = opts.workflow ? `workflow ${opts.workflow}` : "any workflow";
    if (runs.length === 0) {
      const forkHint = fork
        ? " Runs for pull requests from forks may be waiting for a maintainer's approval."
        : "";
      throw new ArtifactsError(
        "NO_SUCCESSFUL_RUN",
        `No successful run of ${workflow} for pull request #${pr} at ${sha.slice(0, 12)} in ${repo}. Wait for CI to finish (or re-run it), then try again.${forkHint}`,
      );
    }
    return this.pickArtifact(repo, runs, opts.artifactName, `pull request #${pr}`);
  }

  async runArtifact(repo: string, runId: number, opts: ArtifactQuery): Promise<ArtifactRef> {
    checkRepo(repo);
    const run = await this.getJsonOr404<ApiRun>(
      `/repos/${repo}/actions/runs/${runId}`,
      `run ${runId} of ${repo}`,
    );
    if (!run)
      throw new ArtifactsError("NOT_FOUND", `${repo} has no workflow run ${runId}; check the run id.`);
    if (run.status !== null && run.status !== "completed") {
      this.opts.onMessage?.(`Run ${runId} is still ${run.status}; its artifacts may be incomplete.`);
    }
    return this.pickArtifact(repo, [run], opts.artifactName, `run ${runId}`);
  }

  private async pickArtifact(
    repo: string,
    runs: ApiRun[],
    name: string | RegExp,
    source: string,
  ): Promise<ArtifactRef> {
    const matches = (a: ApiArtifact) => (typeof name === "string" ? a.name === name : name.test(a.name));
    const expired: ArtifactRef[] = [];
    const seen = new Set<string>();
    for (const run of runs) {
      const artifacts = await this.getAll<ApiArtifact>(
        `/repos/${repo}/actions/runs/${run.id}/artifacts`,
        "artifacts",
        `artifacts of run ${run.id}`,
      );
      for (const a of artifacts) {
        seen.add(a.name);
        if (!matches(a)) continue;
        const ref = toArtifact(a, repo, run);
        if (!a.expired) return ref;
        expired.push(ref);
        this.opts.onMessage?.(
          `Skipping artifact ${a.name} of run ${run.id}: it expired${a.expires_at ? ` on ${a.expires_at}` : ""}.`,
        );
      }
    }
    const wanted = typeof name === "string" ? JSON.stringify(name) : String(name);
    if (expired.length > 0) {
      const e = expired[0]!;
      throw new ArtifactsError(
        "ARTIFACT_EXPIRED",
        `Artifact ${e.name} of run ${e.runId} (${source}) expired${e.expiresAt ? ` on ${e.expiresAt}` : ""}. Re-run the workflow to build a fresh one, then try again.`,
      );
    }
    const available =
      seen.size > 0 ? `available: ${[...seen].sort().join(", ")}` : "the runs uploaded no artifacts";
    throw new ArtifactsError(
      "NO_ARTIFACT",
      `No artifact named ${wanted} in ${runs.length === 1 ? `run ${runs[0]!.id}` : `${runs.length} successful runs`} for ${source} (${available}). Check the artifact name.`,
    );
  }

  private async latestId(repo: string): Promise<number | undefined> {
    const latest = await this.getJsonOr404<ApiRelease>(
      `/repos/${repo}/releases/latest`,
      `latest release of ${repo}`,
    );
    return latest?.id;
  }

  private async getJsonOr404<T>(path: string, what: string): Promise<T | undefined> {
    try {
      return (await this.getJson<T>(this.url(path), what)).data;
    } catch (err) {
      if (err instanceof ArtifactsError && err.code === "NOT_FOUND" && err.status === 404) return undefined;
      throw err;
    }
  }

  /** Every item of a paginated listing; `key` names the array in an object-shaped page. */
  private async getAll<T>(path: string, key: string | undefined, what: string): Promise<T[]> {
    const items: T[] = [];
    const first = this.url(path);
    first.searchParams.set("per_page", "100");
    let next: string | undefined = first.toString();
    while (next) {
      const page: { data: unknown; next: string | undefined } = await this.getJson<unknown>(
        new URL(next),
        what,
      );
      const list = key ? (page.data as Record<string, unknown>)[key] : page.data;
      if (!Array.isArray(list)) {
        throw new ArtifactsError("HTTP_ERROR", `Unexpected answer for ${what}: no list in the response.`);
      }
      items.push(...(list as T[]));
      next = page.next;
    }
    return items;
  }

  private url(path: string): URL {
    return new URL(`${this.apiUrl}${path}`);
  }

  private async getJson<T>(url: URL, what: string): Promise<{ data: T; next: string | undefined }> {
    const { body, headers } = await this.get(url, what, "application/vnd.github+json", 64 << 20);
    return { data: JSON.parse(body.toString("utf8")) as T, next: nextLink(headerValue(headers, "link")) };
  }

  /** One GET with retries, read whole; a failure carries GitHub's own `message` when it sent one. */
  private async get(
    url: URL,
    what: string,
    accept: string,
    maxBytes: number,
  ): Promise<{ body: Buffer; headers: FollowedResponse["headers"] }> {
    // The token goes only to the API's own origin, even when a pagination link or asset URL points elsewhere.
    const token = await this.token();
    const credentials =
      token && url.origin === new URL(this.apiUrl).origin ? { authorization: `Bearer ${token}` } : undefined;
    return retrying(`Fetching ${what}`, this.opts, async () => {
      const res = await getFollowing(url.toString(), {
        agent: this.agent,
        headers: { accept, "user-agent": this.userAgent, "x-github-api-version": "2022-11-28" },
        ...(credentials ? { credentials } : {}),
        signal: this.opts.signal,
        stallTimeoutMs: this.opts.stallTimeoutMs ?? 30_000,
      });
      if (res.statusCode === 200) return { body: await readBody(res.body, maxBytes), headers: res.headers };
      const text = (await readBody(res.body, 1 << 20).catch(() => Buffer.alloc(0))).toString("utf8");
      let message: string | undefined;
      try {
        message = (JSON.parse(text) as { message?: string }).message;
      } catch {
        message = undefined;
      }
      throw failureFor(
        res.statusCode,
        res.headers,
        { what, url: res.url, hasToken: token !== undefined, crossOrigin: res.crossOrigin },
        this.opts,
        message,
      );
    });
  }
}

function checkRepo(repo: string): void {
  if (!REPO.test(repo)) {
    throw new ArtifactsError(
      "INVALID_ARGUMENT",
      `Not a repository: ${JSON.stringify(repo)}; expected owner/name.`,
    );
  }
}

function sha256Of(digest: string | null | undefined): string | undefined {
  const m = /^sha256:([0-9a-f]{64})$/i.exec(digest ?? "");
  return m ? m[1]!.toLowerCase() : undefined;
}

function toRelease(r: ApiRelease, latest: boolean): Release {
  const assets = r.assets.map(
    (a): ReleaseAsset => ({
      id: a.id,
      name: a.name,
      size: a.size,
      url: a.url,
      browserDownloadUrl: a.browser_download_url,
      contentType: a.content_type,
      updatedAt: a.updated_at,
      ...(sha256Of(a.digest) ? { sha256: sha256Of(a.digest) } : {}),
    }),
  );
  return {
    id: r.id,
    tag: r.tag_name,
    name: r.name ?? r.tag_name,
    draft: r.draft,
    prerelease: r.prerelease,
    latest,
    createdAt: r.created_at,
    ...(r.published_at ? { publishedAt: r.published_at } : {}),
    htmlUrl: r.html_url,
    assets,
    size: assets.reduce((sum, a) => sum + a.size, 0),
  };
}

function toArtifact(a: ApiArtifact, repo: string, run: ApiRun): ArtifactRef {
  const sha256 = sha256Of(a.digest);
  return {
    id: a.id,
    name: a.name,
    repo,
    runId: run.id,
    headSha: a.workflow_run?.head_sha ?? run.head_sha,
    sizeInBytes: a.size_in_bytes,
    ...(sha256 ? { sha256 } : {}),
    expired: a.expired,
    ...(a.expires_at ? { expiresAt: a.expires_at } : {}),
    archiveDownloadUrl: a.archive_download_url,
  };
}
