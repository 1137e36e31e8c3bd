import { request } from "node:http";
import type { ForwardedService } from "../core/ports.js";

export interface ServiceHealth {
  name: string;
  url: string;
  healthy: boolean;
  status?: number;
  error?: string;
}

function probe(
  url: string,
  timeoutMs: number,
  headers: Record<string, string> = {},
): Promise<{ status?: number; error?: string }> {
  return new Promise((resolvePromise) => {
    const req = request(
      url,
      { method: "GET", timeout: timeoutMs, headers: { connection: "close", ...headers } },
      (res) => {
        res.resume();
        res.on("end", () => resolvePromise({ status: res.statusCode ?? 0 }));
        res.on("error", (error) => resolvePromise({ error: error.message }));
      },
    );
    req.on("timeout", () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on("error", (error) => resolvePromise({ error: error.message }));
    req.end();
  });
}

export function serviceUrl(service: ForwardedService, path = service.health ?? "/"): string {
  return `http://127.0.0.1:${service.hostPort}${path}`;
}

export async function checkServices(
  services: readonly ForwardedService[],
  timeoutMs = 2000,
): Promise<ServiceHealth[]> {
  return Promise.all(
    services
      .filter((service) => service.health)
      .map(async (service) => {
        const url = serviceUrl(service);
        const result = await probe(url, timeoutMs);
        const healthy = result.status !== undefined && result.status >= 200 && result.status < 400;
        return { name: service.name, url, healthy, ...result };
      }),
  );
}

export interface WaitOptions {
  timeoutMs: number;
  /** Polled between rounds: a VM that died will never become healthy. */
  stillRunning?: () => boolean;
  onWaiting?: (pending: ServiceHealth[]) => void;
}

/** Polls until every service with a health path answers 2xx/3xx; resolves with the last round either way. */
export async function waitHealthy(
  services: readonly ForwardedService[],
  options: WaitOptions,
): Promise<{ healthy: boolean; results: ServiceHealth[] }> {
  const deadline = Date.now() + options.timeoutMs;
  let delay = 10;
  for (;;) {
    const results = await checkServices(services, Math.min(2000, Math.max(200, deadline - Date.now())));
    if (results.every((r) => r.healthy)) return { healthy: true, results };
    if (Date.now() >= deadline || options.stillRunning?.() === false) return { healthy: false, results };
    options.onWaiting?.(results.filter((r) => !r.healthy));
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 200);
  }
}
