/**
 * What a wire log may show. Both protocols carry secrets in places a debugging log must never show: `object-add`
 * of a `secret` (`data`), `set_password`, the guest agent's `input-data` (a process's stdin), `buf-b64` (file
 * contents), captured output (`out-data`), HMP command lines. A value under a key named like that is replaced by
 * its size, and so is any string that looks like a token by itself (long hex or url-safe base64). A line that is
 * not JSON is summarised, never echoed, and long lines are cut.
 */
import { encodeJson, type Frame } from "./framing.js";

export type WireLog = (direction: "in" | "out", line: string) => void;

const SENSITIVE_KEY = /pass(word|phrase)?|secret|token|key|cred|auth|cookie|data|b64|base64|command-line/i;
const SECRET_LOOKING = /^(?:[0-9a-f]{32,}|[A-Za-z0-9_-]{40,}={0,2})$/i;
/** Top-level envelope fields: structural, never secret themselves, so only their contents are inspected. */
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
const LOG_LINE_LIMIT = 4096;

function hidden(value: unknown): string {
  return typeof value === "string" ? `[redacted: ${value.length} chars]` : "[redacted]";
}

function redactValue(value: unknown): unknown {
  if (typeof value === "string") return SECRET_LOOKING.test(value) ? hidden(value) : value;
  if (Array.isArray(value)) return value.map(redactValue);
  if (value !== null && typeof value === "object") {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = SENSITIVE_KEY.test(k) ? hidden(v) : redactValue(v);
    return out;
  }
  return value;
}

/** `message` (one QMP or guest agent message) with its secrets replaced, for a log. */
export function redactMessage(message: unknown): unknown {
  if (message === null || typeof message !== "object" || Array.isArray(message)) return redactValue(message);
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(message)) {
    out[k] = ENVELOPE.has(k) || !SENSITIVE_KEY.test(k) ? redactValue(v) : hidden(v);
  }
  return out;
}

/** Bytes outside the JSON (the guest agent's 0xFF) as `\xff`. */
function escapeBytes(bytes: Buffer | undefined): string {
  return bytes ? [...bytes].map((b) => `\\x${b.toString(16).padStart(2, "0")}`).join("") : "";
}

function cut(text: string): string {
  return text.length <= LOG_LINE_LIMIT ? text : `${text.slice(0, LOG_LINE_LIMIT)}... <${text.length} chars>`;
}

/** The log line for a message about to be sent after `prefix`. */
export function describeSent(message: object, prefix?: Buffer): string {
  return cut(escapeBytes(prefix) + encodeJson(redactMessage(message)));
}

/** The log line for a received frame; `message` is its JSON value (undefined when it is not JSON). */
export function describeReceived(frame: Frame, message: unknown): string {
  const body =
    frame.kind === "oversized"
      ? `[line dropped after ${frame.bytes} bytes: over maxLineBytes]`
      : message === undefined
        ? `[unparseable ${Buffer.byteLength(frame.text)} bytes]`
        : JSON.stringify(redactMessage(message));
  return cut(escapeBytes(frame.prefix) + body);
}
