/**
 * Wire-log redaction. QMP carries secrets in places a debugging log must never show: `object-add` of a `secret`
 * (`data`), `set_password`, `guest-exec` `input-data`, base64 buffers, HMP command lines. Anything under a key named
 * like that is replaced, and so is any string that looks like a token by itself (long hex or url-safe base64).
 */
const SENSITIVE_KEY = /pass(word|phrase)?|secret|token|key|cred|auth|cookie|data|b64|base64|command-line/i;
const SECRET_LOOKING = /^(?:[0-9a-f]{32,}|[A-Za-z0-9_-]{40,}={0,2})$/i;
// Top-level QMP envelope fields: structural, never secret themselves, so only their contents are inspected.
const ENVELOPE = new Set([
  "execute",
  "exec-oob",
  "arguments",
  "return",
  "error",
  "event",
  "data",
  "id",
  "timestamp",
  "QMP",
]);

export const REDACTED = "[redacted]";

function redactValue(value: unknown): unknown {
  if (typeof value === "string") return SECRET_LOOKING.test(value) ? REDACTED : value;
  if (Array.isArray(value)) return value.map(redactValue);
  if (value !== null && typeof value === "object") {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = SENSITIVE_KEY.test(k) ? REDACTED : redactValue(v);
    return out;
  }
  return value;
}

/** Returns `line` (one QMP JSON message) with secrets replaced; a line that is not JSON is summarised, never echoed. */
export function redactLine(line: string): string {
  let message: unknown;
  try {
    message = JSON.parse(line);
  } catch {
    return `[unparseable ${Buffer.byteLength(line)} bytes]`;
  }
  if (message === null || typeof message !== "object" || Array.isArray(message)) {
    return JSON.stringify(redactValue(message));
  }
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(message)) {
    out[k] = ENVELOPE.has(k) || !SENSITIVE_KEY.test(k) ? redactValue(v) : REDACTED;
  }
  return JSON.stringify(out);
}
