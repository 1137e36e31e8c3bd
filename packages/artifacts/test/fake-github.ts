/**
 * A real HTTP implementation of the GitHub REST endpoints @stack/artifacts uses, on 127.0.0.1, plus a second
 * server on another port (another origin) standing in for object storage behind 302 redirects, behaving like a
 * CDN: signed links that expire, Range requests, ETags, an optional cap on each connection's speed. Reusable by
 * other packages' tests: `import { FakeGitHub, makeZip } from "../../artifacts/test/fake-github.js"`.
 */
import { createHash, randomBytes } from "node:crypto";
import {
  createServer,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { crc32 } from "node:zlib";

/** `"correct"` (default) publishes the real digest, `"none"` omits it, any other string is published verbatim. */
export type DigestSpec = "correct" | "none" | string;

export interface FakeAssetSpec {
  name: string;
  content: Buffer;
  digest?: DigestSpec;
  contentType?: string;
}

export interface FakeReleaseSpec {
  tag: string;
  name?: string;
  draft?: boolean;
  prerelease?: boolean;
  /** Marks this release as the repository's latest (default: the newest non-draft, non-prerelease one). */
  latest?: boolean;
  /** ISO date; releases are listed newest first. Default: later for each added release. */
  createdAt?: string;
  assets?: FakeAssetSpec[];
}

export interface FakeArtifactSpec {
  name: string;
  /** The zip bytes served as the artifact archive. */
  content: Buffer;
  expired?: boolean;
  digest?: DigestSpec;
}

export interface FakeRunSpec {
  id: number;
  headSha: string;
  /** Workflow file name. Default "ci.yml". */
  workflow?: string;
  conclusion?: "success" | "failure" | "cancelled" | null;
  status?: "completed" | "in_progress" | "queued";
  createdAt?: string;
  /** The repository the run's commit came from (a fork for fork PRs). Default: the repository itself. */
  headRepo?: string;
  artifacts?: FakeArtifactSpec[];
}

export type Fault =
  /** Answer with this status instead (e.g. 500, or 429 with `retry-after`). */
  | { kind: "status"; status: number; headers?: Record<string, string>; body?: string }
  /** Send the headers and the first `afterBytes` of the body, then drop the connection (mid-range, for a range). */
  | { kind: "drop"; afterBytes: number }
  /** Send the first `afterBytes` of the body, then nothing until the client gives up. */
  | { kind: "stall"; afterBytes: number }
  /** Answer 200 with the whole body even when a Range was asked for. */
  | { kind: "ignore-range" };

export type FaultMatch = string | RegExp | ((request: RequestRecord) => boolean);

export interface RequestRecord {
  server: "api" | "storage";
  method: string;
  /** Path and query. */
  url: string;
  headers: IncomingHttpHeaders;
  /** The status answered. */
  status?: number;
}

export interface FakeGitHubOptions {
  /** When set, this is the only accepted token; artifact zips always need one. */
  token?: string;
  /** Items per page the server hands out at most (forces pagination with small values). Default 100. */
  pageSize?: number;
  /** How long a signed storage link works (GitHub: minutes for release assets, about one for artifact zips). Default 60 s. */
  linkTtlMs?: number;
  /** Storage sends each answer at most this fast, in bytes per second: a CDN's cap per connection. */
  bytesPerSecond?: number;
  /** Storage ignores Range altogether and always answers 200 with the whole file. */
  noRanges?: boolean;
  /** Storage answers with `Connection: close` and closes the connection after each answer. */
  closeConnections?: boolean;
  /** Storage sends no ETag (so clients have no validator for If-Range). Default false. */
  noEtag?: boolean;
}

interface Blob {
  content: Buffer;
  etag: string;
}

interface Release {
  repo: string;
  id: number;
  spec: FakeReleaseSpec;
  createdAt: string;
  assets: { id: number; spec: FakeAssetSpec; blob: string; updatedAt: string }[];
}

interface Run {
  repo: string;
  spec: FakeRunSpec;
  createdAt: string;
  artifacts: { id: number; spec: FakeArtifactSpec; blob: string }[];
}

interface Reply {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

export function sha256(data: Buffer | string): string {
  return createHash("sha256").update(data).digest("hex");
}

export class FakeGitHub {
  apiUrl = "";
  storageUrl = "";
  readonly requests: RequestRecord[] = [];
  /** Called after each slice of a paced answer (see `bytesPerSecond`) went out, with the bytes sent so far. */
  onSent: ((request: RequestRecord, sent: number, total: number) => void) | undefined;
  private readonly api: Server;
  private readonly storage: Server;
  private readonly sockets = new Set<Socket>();
  private readonly blobs = new Map<string, Blob>();
  private readonly links = new Map<string, { blob: string; expires: number }>();
  private readonly releases: Release[] = [];
  private readonly pulls = new Map<string, { headSha: string; headRepo: string | null }>();
  private readonly runs: Run[] = [];
  private readonly faults: { match: FaultMatch; fault: Fault }[] = [];
  private nextId = 1000;
  private clock = Date.parse("2025-01-01T00:00:00Z");

  private constructor(private readonly opts: FakeGitHubOptions) {
    this.api = createServer((req, res) => this.handle("api", req, res));
    this.storage = createServer((req, res) => this.handle("storage", req, res));
    for (const server of [this.api, this.storage]) {
      server.on("connection", (socket) => {
        this.sockets.add(socket);
        socket.on("close", () => this.sockets.delete(socket));
      });
    }
  }

  static async start(opts: FakeGitHubOptions = {}): Promise<FakeGitHub> {
    const fake = new FakeGitHub(opts);
    fake.apiUrl = await listen(fake.api);
    fake.storageUrl = await listen(fake.storage);
    return fake;
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await Promise.all([this.api, this.storage].map((s) => new Promise((done) => s.close(done))));
  }

  addRelease(repo: string, spec: FakeReleaseSpec): void {
    const id = this.nextId++;
    const assets = (spec.assets ?? []).map((a) => ({
      id: this.nextId++,
      spec: a,
      blob: this.addBlob(a.content),
      updatedAt: this.now(),
    }));
    this.releases.push({ repo, id, spec, createdAt: spec.createdAt ?? this.tick(), assets });
  }

  addPull(repo: string, number: number, head: { sha: string; repo?: string | null }): void {
    this.pulls.set(`${repo}#${number}`, {
      headSha: head.sha,
      headRepo: head.repo === undefined ? repo : head.repo,
    });
  }

  addRun(repo: string, spec: FakeRunSpec): void {
    const artifacts = (spec.artifacts ?? []).map((a) => ({
      id: this.nextId++,
      spec: a,
      blob: this.addBlob(a.content),
    }));
    this.runs.push({ repo, spec, createdAt: spec.createdAt ?? this.tick(), artifacts });
  }

  /**
   * Queues faults for requests whose path+query contains `match` (or matches it, or for which it returns true);
   * each is used once, in order.
   */
  fault(match: FaultMatch, ...faults: Fault[]): void {
    for (const fault of faults) this.faults.push({ match, fault });
  }

  /** Every signed link handed out so far stops working, as if its time was up. */
  expireLinks(): void {
    for (const link of this.links.values()) link.expires = 0;
  }

  /**
   * Replaces an asset's bytes. `inPlace` keeps the asset (id, URL, storage object) and changes the object under
   * it, as a storage overwrite would; otherwise it is `gh release upload --clobber`: the old asset is deleted (its
   * API URL answers 404) and a new one with a new id takes its name.
   */
  replaceAsset(
    repo: string,
    tag: string,
    name: string,
    content: Buffer,
    opts: { inPlace?: boolean } = {},
  ): void {
    const release = this.releasesOf(repo).find((r) => r.spec.tag === tag);
    const index = release?.assets.findIndex((a) => a.spec.name === name) ?? -1;
    if (!release || index < 0) throw new Error(`no asset ${name} in ${repo}@${tag}`);
    const old = release.assets[index]!;
    const spec = { ...old.spec, content };
    this.clock += 60_000;
    if (opts.inPlace) {
      this.blobs.set(old.blob, { content, etag: `"${sha256(content).slice(0, 16)}"` });
      release.assets[index] = { ...old, spec, updatedAt: this.now() };
    } else {
      this.blobs.delete(old.blob);
      release.assets[index] = { id: this.nextId++, spec, blob: this.addBlob(content), updatedAt: this.now() };
    }
  }

  /** Faults queued but not yet triggered. */
  pendingFaults(): number {
    return this.faults.length;
  }

  private tick(): string {
    this.clock += 60_000;
    return this.now();
  }

  private now(): string {
    return new Date(this.clock).toISOString();
  }

  private addBlob(content: Buffer): string {
    const key = randomBytes(8).toString("hex");
    this.blobs.set(key, { content, etag: `"${sha256(content).slice(0, 16)}"` });
    return key;
  }

  private handle(server: "api" | "storage", req: IncomingMessage, res: ServerResponse): void {
    const url = req.url ?? "/";
    const record: RequestRecord = { server, method: req.method ?? "GET", url, headers: req.headers };
    this.requests.push(record);
    const index = this.faults.findIndex(({ match }) =>
      typeof match === "string"
        ? url.includes(match)
        : match instanceof RegExp
          ? match.test(url)
          : match(record),
    );
    const fault = index >= 0 ? this.faults.splice(index, 1)[0]!.fault : undefined;
    let reply: Reply;
    if (fault?.kind === "status") {
      reply = { status: fault.status, headers: fault.headers ?? {}, body: Buffer.from(fault.body ?? "") };
    } else {
      try {
        reply =
          server === "api"
            ? this.routeApi(req, new URL(url, this.apiUrl))
            : this.routeStorage(req, new URL(url, this.storageUrl), fault?.kind === "ignore-range");
      } catch (err) {
        reply = json(500, { message: String(err) });
      }
    }
    record.status = reply.status;
    const cut = fault?.kind === "drop" || fault?.kind === "stall" ? fault : undefined;
    const rate = server === "storage" ? this.opts.bytesPerSecond : undefined;
    if (!cut && !rate) {
      send(res, reply);
      return;
    }
    res.writeHead(reply.status, { ...reply.headers, "content-length": String(reply.body.length) });
    const body = reply.body.subarray(0, cut?.afterBytes ?? reply.body.length);
    const progress = (sent: number) => this.onSent?.(record, sent, reply.body.length);
    sendPaced(res, body, rate, progress, () => {
      if (!cut) res.end();
      else if (cut.kind === "drop") req.socket.destroy();
    });
  }

  private authorized(req: IncomingMessage): "ok" | "none" | "bad" {
    const auth = req.headers.authorization;
    if (!auth) return "none";
    if (this.opts.token === undefined) return "ok";
    return auth === `Bearer ${this.opts.token}` || auth === `token ${this.opts.token}` ? "ok" : "bad";
  }

  private routeApi(req: IncomingMessage, url: URL): Reply {
    const auth = this.authorized(req);
    if (auth === "bad") return json(401, { message: "Bad credentials" });
    const p = url.pathname;
    let m: RegExpExecArray | null;
    // biome-ignore lint/suspicious/noAssignInExpressions: a route table reads best as a chain of matches
    if ((m = /^\/repos\/([^/]+\/[^/]+)\/releases$/.exec(p))) {
      const list = this.releasesOf(m[1]!).map((r) => this.releaseJson(r));
      return this.page(url, list);
    }
    // biome-ignore lint/suspicious/noAssignInExpressions: see above
    if ((m = /^\/repos\/([^/]+\/[^/]+)\/releases\/latest$/.exec(p))) {
      const latest = this.latestOf(m[1]!);
      return latest ? json(200, this.releaseJson(latest)) : json(404, { message: "Not Found" });
    }
    // biome-ignore lint/suspicious/noAssignInExpressions: see above
    if ((m = /^\/repos\/([^/]+\/[^/]+)\/releases\/tags\/(.+)$/.exec(p))) {
      const tag = decodeURIComponent(m[2]!);
      // As GitHub: a draft is not found by its tag (the original's -latest release is one while re-uploaded).
      const r = this.releasesOf(m[1]!).find((x) => x.spec.tag === tag && !x.spec.draft);
      return r ? json(200, this.releaseJson(r)) : json(404, { message: "Not Found" });
    }
    // biome-ignore lint/suspicious/noAssignInExpressions: see above
    if ((m = /^\/repos\/([^/]+\/[^/]+)\/releases\/assets\/(\d+)$/.exec(p))) {
      const asset = this.releasesOf(m[1]!)
        .flatMap((r) => r.assets)
        .find((a) => a.id === Number(m![2]));
      if (!asset) return json(404, { message: "Not Found" });
      if (req.headers.accept !== "application/octet-stream") return json(200, this.assetJson(m[1]!, asset));
      return this.redirectTo(asset.blob);
    }
    // biome-ignore lint/suspicious/noAssignInExpressions: see above
    if ((m = /^\/repos\/([^/]+\/[^/]+)\/pulls\/(\d+)$/.exec(p))) {
      const pull = this.pulls.get(`${m[1]}#${m[2]}`);
      if (!pull) return json(404, { message: "Not Found" });
      return json(200, {
        number: Number(m[2]),
        head: {
          sha: pull.headSha,
          ref: "feature",
          repo: pull.headRepo ? { full_name: pull.headRepo } : null,
        },
      });
    }
    // biome-ignore lint/suspicious/noAssignInExpressions: see above
    if ((m = /^\/repos\/([^/]+\/[^/]+)\/actions\/(?:workflows\/([^/]+)\/)?runs$/.exec(p))) {
      const repo = m[1]!;
      const workflow = m[2] ? decodeURIComponent(m[2]) : undefined;
      const headSha = url.searchParams.get("head_sha");
      const status = url.searchParams.get("status");
      const runs = this.runs
        .filter((r) => r.repo === repo)
        .filter((r) => !workflow || (r.spec.workflow ?? "ci.yml") === workflow)
        .filter((r) => !headSha || r.spec.headSha === headSha)
        .filter((r) => !status || conclusionOf(r) === status || (r.spec.status ?? "completed") === status)
        .sort((a, b) => b.createdAt.localeCompare(a.createdAt))
        .map((r) => this.runJson(r));
      return this.page(url, runs, "workflow_runs");
    }
    // biome-ignore lint/suspicious/noAssignInExpressions: see above
    if ((m = /^\/repos\/([^/]+\/[^/]+)\/actions\/runs\/(\d+)$/.exec(p))) {
      const run = this.runs.find((r) => r.repo === m![1] && r.spec.id === Number(m![2]));
      return run ? json(200, this.runJson(run)) : json(404, { message: "Not Found" });
    }
    // biome-ignore lint/suspicious/noAssignInExpressions: see above
    if ((m = /^\/repos\/([^/]+\/[^/]+)\/actions\/runs\/(\d+)\/artifacts$/.exec(p))) {
      const run = this.runs.find((r) => r.repo === m![1] && r.spec.id === Number(m![2]));
      if (!run) return json(404, { message: "Not Found" });
      return this.page(
        url,
        run.artifacts.map((a) => this.artifactJson(run, a)),
        "artifacts",
      );
    }
    // biome-ignore lint/suspicious/noAssignInExpressions: see above
    if ((m = /^\/repos\/([^/]+\/[^/]+)\/actions\/artifacts\/(\d+)\/zip$/.exec(p))) {
      if (auth !== "ok") return json(401, { message: "Must have admin rights to Repository." });
      const artifact = this.runs
        .filter((r) => r.repo === m![1])
        .flatMap((r) => r.artifacts)
        .find((a) => a.id === Number(m![2]));
      if (!artifact) return json(404, { message: "Not Found" });
      if (artifact.spec.expired) return json(410, { message: "Artifact has expired" });
      return this.redirectTo(artifact.blob);
    }
    return json(404, { message: "Not Found" });
  }

  private routeStorage(req: IncomingMessage, url: URL, ignoreRange: boolean): Reply {
    const m = /^\/blob\/([0-9a-f]+)$/.exec(url.pathname);
    const blob = m ? this.blobs.get(m[1]!) : undefined;
    const link = this.links.get(url.searchParams.get("sig") ?? "");
    if (!blob || !link || link.blob !== m![1] || link.expires <= Date.now()) {
      return {
        status: 403,
        headers: { "content-type": "application/xml" },
        body: Buffer.from("<Error><Code>AuthenticationFailed</Code>Signed expiry time has passed</Error>"),
      };
    }
    const size = blob.content.length;
    const headers: Record<string, string> = {
      ...(this.opts.noEtag ? {} : { etag: blob.etag }),
      ...(this.opts.noRanges ? {} : { "accept-ranges": "bytes" }),
      "content-type": "application/octet-stream",
      ...(this.opts.closeConnections ? { connection: "close" } : {}),
    };
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? "");
    const ifRange = req.headers["if-range"];
    if (!range || ignoreRange || this.opts.noRanges || (ifRange !== undefined && ifRange !== blob.etag)) {
      return { status: 200, headers, body: blob.content };
    }
    const start = Number(range[1]);
    const end = range[2] ? Math.min(Number(range[2]), size - 1) : size - 1;
    if (start >= size || end < start)
      return {
        status: 416,
        headers: { ...headers, "content-range": `bytes */${size}` },
        body: Buffer.alloc(0),
      };
    return {
      status: 206,
      headers: { ...headers, "content-range": `bytes ${start}-${end}/${size}` },
      body: blob.content.subarray(start, end + 1),
    };
  }

  private redirectTo(blob: string): Reply {
    const sig = randomBytes(12).toString("hex");
    this.links.set(sig, { blob, expires: Date.now() + (this.opts.linkTtlMs ?? 60_000) });
    return {
      status: 302,
      headers: { location: `${this.storageUrl}/blob/${blob}?sig=${sig}` },
      body: Buffer.alloc(0),
    };
  }

  private page(url: URL, items: unknown[], key?: string): Reply {
    const size = Math.min(Number(url.searchParams.get("per_page") ?? 30), this.opts.pageSize ?? 100);
    const page = Number(url.searchParams.get("page") ?? 1);
    const slice = items.slice((page - 1) * size, page * size);
    const headers: Record<string, string> = {};
    if (page * size < items.length) {
      const next = new URL(url);
      next.searchParams.set("page", String(page + 1));
      const last = new URL(url);
      last.searchParams.set("page", String(Math.ceil(items.length / size)));
      headers.link = `<${next}>; rel="next", <${last}>; rel="last"`;
    }
    const body = key ? { total_count: items.length, [key]: slice } : slice;
    return { ...json(200, body), headers: { ...headers, "content-type": "application/json" } };
  }

  private releasesOf(repo: string): Release[] {
    return this.releases
      .filter((r) => r.repo === repo)
      .sort((a, b) => b.createdAt.localeCompare(a.createdAt));
  }

  private latestOf(repo: string): Release | undefined {
    const releases = this.releasesOf(repo);
    return releases.find((r) => r.spec.latest) ?? releases.find((r) => !r.spec.draft && !r.spec.prerelease);
  }

  private releaseJson(r: Release): object {
    return {
      id: r.id,
      tag_name: r.spec.tag,
      name: r.spec.name ?? r.spec.tag,
      draft: r.spec.draft ?? false,
      prerelease: r.spec.prerelease ?? false,
      created_at: r.createdAt,
      published_at: r.spec.draft ? null : r.createdAt,
      html_url: `https://github.invalid/${r.repo}/releases/tag/${r.spec.tag}`,
      assets: r.assets.map((a) => this.assetJson(r.repo, a)),
    };
  }

  private assetJson(repo: string, a: Release["assets"][number]): object {
    return {
      id: a.id,
      name: a.spec.name,
      size: a.spec.content.length,
      url: `${this.apiUrl}/repos/${repo}/releases/assets/${a.id}`,
      browser_download_url: `https://github.invalid/${repo}/releases/download/${a.spec.name}`,
      content_type: a.spec.contentType ?? "application/octet-stream",
      digest: digestOf(a.spec.content, a.spec.digest),
      updated_at: a.updatedAt,
    };
  }

  private runJson(r: Run): object {
    return {
      id: r.spec.id,
      head_sha: r.spec.headSha,
      status: r.spec.status ?? "completed",
      conclusion: conclusionOf(r),
      path: `.github/workflows/${r.spec.workflow ?? "ci.yml"}`,
      created_at: r.createdAt,
      head_repository: { full_name: r.spec.headRepo ?? r.repo },
    };
  }

  private artifactJson(run: Run, a: Run["artifacts"][number]): object {
    return {
      id: a.id,
      name: a.spec.name,
      size_in_bytes: a.spec.content.length,
      archive_download_url: `${this.apiUrl}/repos/${run.repo}/actions/artifacts/${a.id}/zip`,
      expired: a.spec.expired ?? false,
      expires_at: a.spec.expired ? "2025-01-02T00:00:00Z" : "2099-01-01T00:00:00Z",
      digest: digestOf(a.spec.content, a.spec.digest),
      workflow_run: { id: run.spec.id, head_sha: run.spec.headSha },
    };
  }
}

function conclusionOf(r: Run): string | null {
  return r.spec.conclusion === undefined ? "success" : r.spec.conclusion;
}

function digestOf(content: Buffer, spec: DigestSpec | undefined): string | null {
  if (spec === "none") return null;
  if (spec === undefined || spec === "correct") return `sha256:${sha256(content)}`;
  return spec;
}

function json(status: number, body: unknown): Reply {
  return { status, headers: { "content-type": "application/json" }, body: Buffer.from(JSON.stringify(body)) };
}

function send(res: ServerResponse, reply: Reply): void {
  res.writeHead(reply.status, { ...reply.headers, "content-length": String(reply.body.length) });
  res.end(reply.body);
}

/** Writes `body` in slices, no faster than `rate` bytes per second when given, then calls `done`. */
function sendPaced(
  res: ServerResponse,
  body: Buffer,
  rate: number | undefined,
  progress: (sent: number) => void,
  done: () => void,
): void {
  const slice = 64 << 10;
  const started = Date.now();
  let sent = 0;
  let timer: NodeJS.Timeout | undefined;
  res.on("close", () => clearTimeout(timer));
  const pump = () => {
    while (sent < body.length) {
      const due = rate ? started + (sent / rate) * 1000 : 0;
      if (due > Date.now()) {
        timer = setTimeout(pump, due - Date.now());
        return;
      }
      const piece = body.subarray(sent, sent + slice);
      sent += piece.length;
      progress(sent);
      if (sent >= body.length) {
        res.write(piece, done);
        return;
      }
      if (!res.write(piece)) {
        res.once("drain", pump);
        return;
      }
    }
    done();
  };
  pump();
}

function listen(server: Server): Promise<string> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () =>
      resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`),
    );
  });
}

export interface ZipEntrySpec {
  name: string;
  data?: Buffer | string;
  /** Store the entry as a symbolic link to this target. */
  symlinkTo?: string;
}

/**
 * A minimal zip writer (stored entries, no compression), so tests can build archives that zip tools refuse to
 * make, such as entries named `../escape`.
 */
export function makeZip(entries: ZipEntrySpec[]): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const e of entries) {
    const name = Buffer.from(e.name, "utf8");
    const data = Buffer.from(e.symlinkTo ?? e.data ?? "");
    const crc = crc32(data);
    const mode = e.symlinkTo !== undefined ? 0o120777 : e.name.endsWith("/") ? 0o040755 : 0o100644;
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt16LE(0x0800, 6); // UTF-8 names
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(data.length, 18);
    local.writeUInt32LE(data.length, 22);
    local.writeUInt16LE(name.length, 26);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE((3 << 8) | 20, 4); // made by Unix, so the mode bits are honoured
    central.writeUInt16LE(20, 6);
    central.writeUInt16LE(0x0800, 8);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(data.length, 20);
    central.writeUInt32LE(data.length, 24);
    central.writeUInt16LE(name.length, 28);
    central.writeUInt32LE((mode << 16) >>> 0, 38);
    central.writeUInt32LE(offset, 42);
    locals.push(local, name, data);
    centrals.push(central, name);
    offset += local.length + name.length + data.length;
  }
  const cd = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(cd.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, cd, end]);
}
