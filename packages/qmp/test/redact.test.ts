import { describe, expect, it } from "vitest";
import { describeReceived, describeSent } from "../src/protocol/redact.js";

const received = (text: string) => {
  let message: unknown;
  try {
    message = JSON.parse(text);
  } catch {
    message = undefined;
  }
  return describeReceived({ kind: "line", text }, message);
};

describe("wire log redaction", () => {
  it("hides secret-named arguments at any depth, by their size, but keeps the command visible", () => {
    const line = describeSent({
      execute: "object-add",
      arguments: { "qom-type": "secret", id: "s0", data: "hunter2", nested: [{ password: 1234, size: 3 }] },
      id: "c1",
    });
    const out = JSON.parse(line);
    expect(out.execute).toBe("object-add");
    expect(out.arguments).toEqual({
      "qom-type": "secret",
      id: "s0",
      data: "[redacted: 7 chars]",
      nested: [{ password: "[redacted]", size: 3 }],
    });
    expect(line).not.toContain("hunter2");
  });

  it("hides guest agent stdin, file contents and output, HMP command lines and token-looking strings", () => {
    const exec = describeSent({
      execute: "guest-exec",
      arguments: { path: "/bin/sh", "input-data": "U0VDUkVUPTEK" },
    });
    expect(exec).not.toContain("U0VDUkVUPTEK");
    expect(exec).toContain("/bin/sh");
    const write = describeSent({
      execute: "guest-file-write",
      arguments: { handle: 1, "buf-b64": "c2VjcmV0" },
    });
    expect(write).not.toContain("c2VjcmV0");
    const output = received('{"return":{"exited":true,"exitcode":0,"out-data":"c2VjcmV0Cg=="}}');
    expect(output).not.toContain("c2VjcmV0Cg==");
    expect(output).toContain('"exitcode":0');
    const hmp = describeSent({
      execute: "human-monitor-command",
      arguments: { "command-line": "object_add secret,data=x" },
    });
    expect(hmp).not.toContain("data=x");
    const token = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const reply = received(JSON.stringify({ return: { note: token, status: "running" }, id: "c2" }));
    expect(reply).not.toContain(token);
    expect(reply).toContain("running");
  });

  it("keeps event data readable, bigints exact and prefix bytes visible", () => {
    const event = JSON.parse(received('{"event":"MIGRATION","data":{"status":"completed"}}'));
    expect(event.data).toEqual({ status: "completed" });
    expect(describeSent({ execute: "guest-set-time", arguments: { time: -2208988800000000001n } })).toBe(
      '{"execute":"guest-set-time","arguments":{"time":-2208988800000000001}}',
    );
    expect(describeSent({ execute: "guest-sync-delimited" }, Buffer.of(0xff))).toBe(
      '\\xff{"execute":"guest-sync-delimited"}',
    );
  });

  it("never echoes a line it cannot parse, and cuts long lines", () => {
    expect(received('{"password": "abc"')).toBe("[unparseable 18 bytes]");
    const long = received(JSON.stringify({ return: "x ".repeat(5000) }));
    expect(long.length).toBeLessThan(4200);
    expect(long).toMatch(/\.\.\. <\d+ chars>$/);
    expect(describeReceived({ kind: "oversized", bytes: 65537 }, undefined)).toBe(
      "[line dropped after 65537 bytes: over maxLineBytes]",
    );
  });
});
