import { ArtifactsError, redactUrl } from "./errors.js";
import { bareHost } from "./http1.js";

/**
 * The forward proxy a request to `url` goes through, from the environment the way undici's EnvHttpProxyAgent
 * reads it: `https_proxy`/`HTTPS_PROXY` for https URLs, falling back to `http_proxy`/`HTTP_PROXY`, which also
 * serves http URLs; `no_proxy`/`NO_PROXY` lists hosts reached directly. An empty variable counts as unset, for
 * the proxies and NO_PROXY alike. Undefined: connect directly.
 */
export function proxyFor(url: URL, env: NodeJS.ProcessEnv): URL | undefined {
  const http = env.http_proxy || env.HTTP_PROXY;
  const raw = url.protocol === "https:" ? env.https_proxy || env.HTTPS_PROXY || http : http;
  if (!raw || bypassed(url, env.no_proxy || env.NO_PROXY || "")) return undefined;
  let proxy: URL;
  try {
    proxy = new URL(raw.includes("://") ? raw : `http://${raw}`);
  } catch {
    throw new ArtifactsError("INVALID_ARGUMENT", `The proxy setting ${JSON.stringify(raw)} is not a URL.`);
  }
  if (proxy.protocol !== "http:" && proxy.protocol !== "https:") {
    throw new ArtifactsError(
      "INVALID_ARGUMENT",
      `Only http:// and https:// proxies are supported, not ${redactUrl(proxy.href)}; set HTTPS_PROXY to one, or add ${url.hostname} to NO_PROXY.`,
    );
  }
  return proxy;
}

/**
 * curl's reading of NO_PROXY: `*` for every host; otherwise comma- or space-separated names, each matching the
 * host itself and its subdomains (a leading dot is optional), IP addresses literally, `:port` narrowing an entry.
 */
function bypassed(url: URL, noProxy: string): boolean {
  const host = bareHost(url).toLowerCase();
  const port = url.port || (url.protocol === "https:" ? "443" : "80");
  for (const item of noProxy.split(/[\s,]+/)) {
    const entry = item.trim().toLowerCase();
    if (!entry) continue;
    if (entry === "*") return true;
    const { name, port: only } = splitEntry(entry);
    if (only !== undefined && only !== port) continue;
    if (host === name || host.endsWith(`.${name}`)) return true;
  }
  return false;
}

/** `name`, `.name`, `*.name`, `name:port`, `10.0.0.1`, `::1`, `[::1]:port`. */
function splitEntry(entry: string): { name: string; port?: string } {
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(entry);
  if (bracketed) return { name: bracketed[1]!, ...(bracketed[2] ? { port: bracketed[2] } : {}) };
  const colons = entry.split(":").length - 1;
  const [name = "", port] = colons === 1 ? entry.split(":") : [entry];
  return { name: name.replace(/^\*?\./, ""), ...(port ? { port } : {}) };
}
