import { createHash, randomBytes } from "node:crypto";
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import { createServer as createNetServer, type Server, type Socket } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, describe, expect, it } from "vitest";
import { type Body, ChunkedDecoder, Http1Error, http1Get } from "../src/http1.js";
import { localhostCertificate } from "./certificate.js";

const servers: Server[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
});

async function listen(server: Server): Promise<number> {
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return (server.address() as { port: number }).port;
}

function httpServer(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<number> {
  return listen(createHttpServer(handler));
}

/** A server that writes `pieces` to every connection, one socket write each, with a pause between them. */
function rawServer(pieces: (string | Buffer)[], pauseMs = 5): Promise<number> {
  return listen(
    createNetServer(async (socket: Socket) => {
      socket.on("error", () => undefined);
      // Reading the request (and then the client's end) is what lets close() finish.
      socket.resume();
      for (const piece of pieces) {
        if (socket.destroyed) return;
        socket.write(piece);
        await sleep(pauseMs);
      }
      socket.end();
    }),
  );
}

async function collect(body: Body): Promise<{ data: Buffer; chunks: number }> {
  const parts: Buffer[] = [];
  for await (const chunk of body) parts.push(Buffer.from(chunk));
  return { data: Buffer.concat(parts), chunks: parts.length };
}

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

describe("http1Get", () => {
  it("sends the request line and headers, and reads a content-length body in large chunks", async () => {
    const content = randomBytes(5 * 1024 * 1024 + 123);
    let seen: IncomingMessage | undefined;
    const port = await httpServer((req, res) => {
      seen = req;
      res.writeHead(200, {
        "content-length": String(content.length),
        etag: '"v1"',
        "set-cookie": ["a=1", "b=2"],
      });
      res.end(content);
    });
    const res = await http1Get(new URL(`http://127.0.0.1:${port}/file.bin?x=1&y=2`), {
      range: "bytes=0-",
      "user-agent": "test",
    });
    expect(res.statusCode).toBe(200);
    expect(res.headers.etag).toBe('"v1"');
    expect(res.headers["set-cookie"]).toEqual(["a=1", "b=2"]);
    const { data, chunks } = await collect(res.body);
    expect(sha(data)).toBe(sha(content));
    // Megabyte chunks, not node:http's 64 KiB reads.
    expect(chunks).toBeLessThanOrEqual(12);
    expect(seen?.url).toBe("/file.bin?x=1&y=2");
    expect(seen?.headers.host).toBe(`127.0.0.1:${port}`);
    expect(seen?.headers.range).toBe("bytes=0-");
    expect(seen?.headers.connection).toBe("close");
  });

  it("decodes a chunked body whose framing is split across reads at every position", async () => {
    const payload = randomBytes(3000);
    const framed = Buffer.concat([
      Buffer.from("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
      Buffer.from("3e8;ext=1\r\n"),
      payload.subarray(0, 1000),
      Buffer.from("\r\n7D0\r\n"),
      payload.subarray(1000),
      Buffer.from("\r\n0\r\nx-trailer: y\r\n\r\n"),
    ]);
    // One byte per write around the framing, so every boundary falls between two reads somewhere.
    const pieces: Buffer[] = [];
    for (let i = 0; i < framed.length; ) {
      const size = i % 7 === 0 ? 1 : 97;
      pieces.push(framed.subarray(i, i + size));
      i += size;
    }
    const port = await rawServer(pieces, 0);
    const res = await http1Get(new URL(`http://127.0.0.1:${port}/`), {});
    const { data } = await collect(res.body);
    expect(data.equals(payload)).toBe(true);
  });

  it("decodes chunked framing fed one byte at a time", () => {
    const decoder = new ChunkedDecoder();
    const input = Buffer.from("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
    const out: string[] = [];
    for (let i = 0; i < input.length; i++) {
      const one = Buffer.from(input.subarray(i, i + 1));
      const n = decoder.decode(one, 0, 1);
      out.push(one.toString("latin1", 0, n));
    }
    expect(out.join("")).toBe("hello world");
    expect(decoder.done).toBe(true);
    expect(() => new ChunkedDecoder().decode(Buffer.from("zz\r\n"), 0, 4)).toThrow(Http1Error);
  });

  it("skips 1xx answers, and reads a close-delimited body to the end", async () => {
    const port = await rawServer([
      "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n",
      "X-A: 1\r\n\r\nfirst ",
      "second",
    ]);
    const res = await http1Get(new URL(`http://127.0.0.1:${port}/`), {});
    expect(res.statusCode).toBe(200);
    expect(res.headers["x-a"]).toBe("1");
    expect((await collect(res.body)).data.toString()).toBe("first second");
  });

  it("yields every byte that arrived before a connection cut mid-body, then fails", async () => {
    const port = await rawServer(["HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", "x".repeat(40)]);
    const res = await http1Get(new URL(`http://127.0.0.1:${port}/`), {});
    const got: Buffer[] = [];
    const error = await (async () => {
      try {
        for await (const chunk of res.body) got.push(chunk);
      } catch (err) {
        return err as Http1Error;
      }
      return undefined;
    })();
    expect(Buffer.concat(got).toString()).toBe("x".repeat(40));
    expect(error).toBeInstanceOf(Http1Error);
    expect(error?.code).toBe("ECONNRESET");
    expect(error?.message).toMatch(/60 bytes of the body missing/);
  });

  it("fails a chunked body cut before its last chunk, instead of ending it quietly", async () => {
    const port = await rawServer(["HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"]);
    const res = await http1Get(new URL(`http://127.0.0.1:${port}/`), {});
    await expect(collect(res.body)).rejects.toThrow(/closed the connection mid-body/);
  });

  it("refuses what is not an HTTP/1.x answer, and a head that never ends", async () => {
    const garbage = await rawServer(["SSH-2.0-OpenSSH_9.2\r\n\r\n"]);
    await expect(http1Get(new URL(`http://127.0.0.1:${garbage}/`), {})).rejects.toThrow(
      /not an HTTP\/1\.x response/,
    );
    const endless = await rawServer([`HTTP/1.1 200 OK\r\n${"X-Pad: y\r\n".repeat(8000)}`]);
    await expect(http1Get(new URL(`http://127.0.0.1:${endless}/`), {})).rejects.toThrow(/head too long/);
    const early = await rawServer([]);
    await expect(http1Get(new URL(`http://127.0.0.1:${early}/`), {})).rejects.toMatchObject({
      code: "ECONNRESET",
    });
  });

  it("pauses the socket while a slow consumer catches up, losing nothing", async () => {
    const content = randomBytes(24 * 1024 * 1024);
    const port = await httpServer((_req, res) => {
      res.writeHead(200, { "content-length": String(content.length) });
      res.end(content);
    });
    const res = await http1Get(new URL(`http://127.0.0.1:${port}/`), {});
    const hash = createHash("sha256");
    let chunks = 0;
    for await (const chunk of res.body) {
      hash.update(chunk);
      if (chunks++ < 10) await sleep(20);
    }
    expect(hash.digest("hex")).toBe(sha(content));
  });

  it("fails a quiet connection with the stall error, and an aborted one with the signal's reason", async () => {
    const port = await rawServer(["HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab"], 2000);
    const res = await http1Get(
      new URL(`http://127.0.0.1:${port}/`),
      {},
      {
        stallTimeoutMs: 200,
        stallError: (ms) => new Error(`stalled ${ms}`),
      },
    );
    await expect(collect(res.body)).rejects.toThrow("stalled 200");
    const controller = new AbortController();
    const pending = http1Get(new URL(`http://127.0.0.1:${port}/`), {}, { signal: controller.signal });
    controller.abort(new Error("user gave up"));
    await expect(pending).rejects.toThrow("user gave up");
  });

  it("speaks https, checking the certificate against the given CA", async () => {
    const { key, cert } = localhostCertificate();
    const content = randomBytes(3 * 1024 * 1024);
    const server = createHttpsServer({ key, cert }, (_req, res) => {
      res.writeHead(200, { "content-length": String(content.length) });
      res.end(content);
    });
    const port = await listen(server);
    const res = await http1Get(new URL(`https://localhost:${port}/x`), {}, { ca: cert });
    expect(sha((await collect(res.body)).data)).toBe(sha(content));
    // Without the CA the self-signed certificate is refused.
    await expect(http1Get(new URL(`https://localhost:${port}/x`), {})).rejects.toThrow(
      /self-signed|certificate/i,
    );
  });

  it("refuses header values that would split the request", async () => {
    const port = await httpServer((_req, res) => res.end());
    await expect(
      http1Get(new URL(`http://127.0.0.1:${port}/`), { "x-evil": "a\r\nInjected: 1" }),
    ).rejects.toThrow(/invalid header/);
  });
});
