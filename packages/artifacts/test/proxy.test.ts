import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { createServer, request, type Server } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import { connect, createServer as createNetServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, describe, expect, it } from "vitest";
import { Http1Agent } from "../src/http1.js";
import { type ArtifactsError, fetchReleaseAsset, GitHubClient } from "../src/index.js";
import { proxyFor } from "../src/proxy.js";
import { localhostCertificate } from "./certificate.js";
import { FakeGitHub, sha256 } from "./fake-github.js";

const TOKEN = "ghp_proxy_test_token";
const REPO = "acme/images";

const closers: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  await Promise.all(closers.splice(0).map((close) => close()));
});

function listen(server: Server): Promise<number> {
  const sockets = new Set<Socket>();
  server.on("connection", (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  closers.push(
    () =>
      new Promise((done) => {
        for (const s of sockets) s.destroy();
        server.close(done);
      }),
  );
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port)),
  );
}

interface Seen {
  /** Request lines as the proxy got them: `GET http://...` or `CONNECT host:port`. */
  lines: string[];
  /** Headers of the plain-http requests it forwarded, by absolute URL. */
  headers: Map<string, Record<string, string | string[] | undefined>>;
}

/** A forward proxy: absolute-form requests are forwarded, CONNECT opens a tunnel; `auth` makes it ask for credentials. */
async function startProxy(auth?: string): Promise<{ url: string; seen: Seen }> {
  const seen: Seen = { lines: [], headers: new Map() };
  const authorized = (header: string | undefined) =>
    !auth || header === `Basic ${Buffer.from(auth).toString("base64")}`;
  const server = createServer((req, res) => {
    seen.lines.push(`${req.method} ${req.url}`);
    seen.headers.set(req.url ?? "", req.headers);
    if (!authorized(req.headers["proxy-authorization"])) {
      res.writeHead(407, { "proxy-authenticate": "Basic" }).end();
      return;
    }
    const { "proxy-authorization": _, ...headers } = req.headers;
    const upstream = request(req.url!, { method: req.method, headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    upstream.on("error", () => res.destroy());
    req.pipe(upstream);
  });
  server.on("connect", (req, client: Socket, head: Buffer) => {
    seen.lines.push(`CONNECT ${req.url}`);
    if (!authorized(req.headers["proxy-authorization"])) {
      client.end("HTTP/1.1 407 Proxy Authentication Required\r\nproxy-authenticate: Basic\r\n\r\n");
      return;
    }
    const [host, port] = (req.url ?? "").split(":");
    const target = connect(Number(port), host === "localhost" ? "127.0.0.1" : host, () => {
      client.write("HTTP/1.1 200 Connection Established\r\n\r\n");
      target.write(head);
      target.pipe(client);
      client.pipe(target);
    });
    target.on("error", () => client.destroy());
    client.on("error", () => target.destroy());
  });
  const port = await listen(server);
  return { url: `http://127.0.0.1:${port}`, seen };
}

describe("proxy settings", () => {
  it("read HTTPS_PROXY, then HTTP_PROXY, and NO_PROXY the way curl does", () => {
    const env = {
      HTTPS_PROXY: "http://p:3128",
      http_proxy: "proxy.corp:8080",
      NO_PROXY: ".internal, 10.0.0.1,*.svc:8443,[::1]",
    };
    expect(proxyFor(new URL("https://api.github.com/x"), env)?.href).toBe("http://p:3128/");
    expect(proxyFor(new URL("http://example.com/"), env)?.href).toBe("http://proxy.corp:8080/");
    expect(proxyFor(new URL("https://example.com/"), { http_proxy: "http://q:1" })?.href).toBe("http://q:1/");
    expect(proxyFor(new URL("https://a.b.internal/"), env)).toBeUndefined();
    expect(proxyFor(new URL("https://internal/"), env)).toBeUndefined();
    expect(proxyFor(new URL("http://10.0.0.1:9000/"), env)).toBeUndefined();
    expect(proxyFor(new URL("https://x.svc:8443/"), env)).toBeUndefined();
    expect(proxyFor(new URL("https://x.svc/"), env)?.host).toBe("p:3128");
    expect(proxyFor(new URL("http://[::1]:80/"), env)).toBeUndefined();
    expect(proxyFor(new URL("https://example.com/"), { ...env, no_proxy: "*" })).toBeUndefined();
    // An empty variable is unset, as for the proxies: it does not hide the other spelling.
    expect(proxyFor(new URL("https://a.b.internal/"), { ...env, no_proxy: "" })).toBeUndefined();
    expect(() => proxyFor(new URL("https://example.com/"), { HTTPS_PROXY: "socks5://s:1080" })).toThrow(
      /Only http:\/\/ and https:\/\/ proxies/,
    );
  });

  it("send API calls and downloads through the proxy, the token to the API only, and NO_PROXY around it", async () => {
    const proxy = await startProxy();
    const fake = await FakeGitHub.start({ token: TOKEN });
    closers.push(() => fake.close());
    const disk = randomBytes(3 * 1024 * 1024);
    fake.addRelease(REPO, { tag: "v1", assets: [{ name: "disk.qcow2", content: disk }] });
    const dir = mkdtempSync(join(tmpdir(), "artifacts-proxy-"));
    closers.push(async () => rmSync(dir, { recursive: true, force: true }));

    const viaProxy = new GitHubClient({ apiUrl: fake.apiUrl, token: TOKEN, env: { HTTP_PROXY: proxy.url } });
    const release = await viaProxy.releaseByTag(REPO, "v1");
    const fetched = await fetchReleaseAsset({
      client: viaProxy,
      release,
      asset: "disk.qcow2",
      dest: join(dir, "a.qcow2"),
    });
    expect(sha256(await readFile(fetched.path))).toBe(sha256(disk));
    const storage = proxy.seen.lines.filter((l) => l.startsWith(`GET ${fake.storageUrl}/blob/`));
    expect(proxy.seen.lines).toContain(`GET ${fake.apiUrl}/repos/${REPO}/releases/tags/v1`);
    expect(proxy.seen.lines).toContain(`GET ${release.assets[0]!.url}`);
    expect(storage.length).toBeGreaterThan(0);
    expect(proxy.seen.headers.get(release.assets[0]!.url)?.authorization).toBe(`Bearer ${TOKEN}`);
    for (const line of storage) expect(proxy.seen.headers.get(line.slice(4))?.authorization).toBeUndefined();

    const before = proxy.seen.lines.length;
    const direct = new GitHubClient({
      apiUrl: fake.apiUrl,
      token: TOKEN,
      env: { HTTP_PROXY: proxy.url, NO_PROXY: "127.0.0.1" },
    });
    await fetchReleaseAsset({
      client: direct,
      release: await direct.releaseByTag(REPO, "v1"),
      asset: "disk.qcow2",
      dest: join(dir, "b.qcow2"),
    });
    expect(proxy.seen.lines.length).toBe(before);
  });

  it("go around the proxy for NO_PROXY when no_proxy is set but empty", async () => {
    const proxy = await startProxy();
    const fake = await FakeGitHub.start({ token: TOKEN });
    closers.push(() => fake.close());
    fake.addRelease(REPO, { tag: "v1", assets: [{ name: "disk.qcow2", content: randomBytes(1024) }] });
    const client = new GitHubClient({
      apiUrl: fake.apiUrl,
      token: TOKEN,
      env: { HTTP_PROXY: proxy.url, no_proxy: "", NO_PROXY: "127.0.0.1" },
    });
    expect((await client.releaseByTag(REPO, "v1")).tag).toBe("v1");
    expect(proxy.seen.lines).toEqual([]);
  });

  it("tunnel https through CONNECT, and say what to do when the proxy wants credentials", async () => {
    const { key, cert } = localhostCertificate();
    const content = randomBytes(5 * 1024 * 1024);
    const port = await listen(
      createHttpsServer({ key, cert }, (_req, res) => {
        res.writeHead(200, { "content-length": String(content.length) });
        res.end(content);
      }),
    );
    const target = new URL(`https://localhost:${port}/image`);
    const proxy = await startProxy("user:s3cret");
    const agent = new Http1Agent({
      ca: cert,
      proxyFor: (url) => proxyFor(url, { HTTPS_PROXY: proxy.url.replace("//", "//user:s3cret@") }),
    });
    closers.push(async () => agent.close());
    const chunks: Buffer[] = [];
    for await (const chunk of (await agent.get(target, {})).body) chunks.push(Buffer.from(chunk));
    expect(sha256(Buffer.concat(chunks))).toBe(sha256(content));
    expect(proxy.seen.lines).toEqual([`CONNECT localhost:${port}`]);

    const refused = new Http1Agent({ ca: cert, proxyFor: () => new URL(proxy.url) });
    const err = (await refused.get(target, {}).catch((e: unknown) => e)) as ArtifactsError;
    expect(err.code).toBe("HTTP_ERROR");
    expect(err.message).toMatch(/wants credentials \(407\).*http:\/\/user:password@host:port/);
  });

  it("close their connection to a proxy that refuses the tunnel, or talks before it is set up, and then waits", async () => {
    for (const [answer, error] of [
      [
        "HTTP/1.1 407 Proxy Authentication Required\r\nproxy-authenticate: Basic\r\n\r\n",
        /wants credentials/,
      ],
      ["HTTP/1.1 200 Connection Established\r\n\r\nbytes before the tunnel", /before the tunnel was set up/],
    ] as const) {
      let peer: Socket | undefined;
      let gone!: Promise<void>;
      const server = createNetServer((socket) => {
        peer = socket;
        socket.on("error", () => {});
        gone = new Promise((resolve) => socket.on("close", () => resolve()));
        // Answers the CONNECT and leaves the connection open: only the client can close it.
        socket.once("data", () => socket.write(answer));
      });
      closers.push(
        () =>
          new Promise((done) => {
            peer?.destroy();
            server.close(done);
          }),
      );
      const port = await new Promise<number>((resolve) =>
        server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port)),
      );
      const agent = new Http1Agent({ proxyFor: () => new URL(`http://127.0.0.1:${port}`) });
      closers.push(async () => agent.close());
      const err = await agent.get(new URL("https://localhost:9/image"), {}).catch((e: unknown) => e);
      expect((err as Error).message).toMatch(error);
      const closed = await Promise.race([gone.then(() => true), sleep(2000).then(() => false)]);
      // A socket the client kept would now get an error nobody listens for: an uncaught exception.
      if (!closed) peer?.resetAndDestroy();
      expect(closed).toBe(true);
    }
  });
});
