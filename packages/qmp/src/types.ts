import type { WireLog } from "./protocol/redact.js";

export interface QemuVersionTriple {
  major: number;
  minor: number;
  micro: number;
}

export interface QmpGreeting {
  version: { qemu: QemuVersionTriple; package?: string };
  capabilities: string[];
}

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

export interface ConnectOptions {
  /** Deadline for the socket to appear, accept, greet and negotiate. Default 10 s. */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Receives every line on the wire with secrets redacted (see the README's "Wire log"). */
  wireLog?: WireLog;
  /** Default deadline for each `execute` that sets none. Default 60 s; `Infinity` waits forever. */
  commandTimeoutMs?: number;
  /** Largest message accepted from QEMU; a longer one closes the connection with a PROTOCOL error. Default 16 MiB. */
  maxLineBytes?: number;
}

export interface ExecuteOptions {
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface WaitForEventOptions {
  predicate?: (e: QmpEvent) => boolean;
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface StatusInfo {
  status: string;
  running: boolean;
  singlestep?: boolean;
}
