import { describe, expect, it } from "vitest";
import { REDACTED, redactLine } from "../src/redact.js";

describe("redactLine", () => {
  it("hides secret-named arguments at any depth but keeps the command visible", () => {
    const line = JSON.stringify({
      execute: "object-add",
      arguments: { "qom-type": "secret", id: "s0", data: "hunter2", nested: [{ password: "pw", size: 3 }] },
      id: "c1",
    });
    const out = JSON.parse(redactLine(line));
    expect(out.execute).toBe("object-add");
    expect(out.arguments).toEqual({
      "qom-type": "secret",
      id: "s0",
      data: REDACTED,
      nested: [{ password: REDACTED, size: 3 }],
    });
    expect(redactLine(line)).not.toContain("hunter2");
  });

  it("hides guest-exec input-data, HMP command lines and token-looking strings", () => {
    const exec = redactLine(
      JSON.stringify({ execute: "guest-exec", arguments: { path: "/bin/sh", "input-data": "U0VDUkVUPTEK" } }),
    );
    expect(exec).not.toContain("U0VDUkVUPTEK");
    expect(exec).toContain("/bin/sh");
    const hmp = redactLine(
      JSON.stringify({
        execute: "human-monitor-command",
        arguments: { "command-line": "object_add secret,data=x" },
      }),
    );
    expect(hmp).not.toContain("data=x");
    const token = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const reply = redactLine(JSON.stringify({ return: { note: token, status: "running" }, id: "c2" }));
    expect(reply).not.toContain(token);
    expect(reply).toContain("running");
  });

  it("keeps event data readable and never echoes a line it cannot parse", () => {
    const event = JSON.parse(redactLine('{"event":"MIGRATION","data":{"status":"completed"}}'));
    expect(event.data).toEqual({ status: "completed" });
    expect(redactLine('{"password": "abc"')).toBe("[unparseable 18 bytes]");
  });
});
