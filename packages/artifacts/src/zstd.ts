import { ArtifactsError } from "./errors.js";

/** Bytes enough for any zstd frame header (magic 4 + descriptor 1 + window 1 + dictionary id 4 + size 8). */
export const ZSTD_HEADER_MAX = 18;

/**
 * The decompressed size a zstd frame header declares (RFC 8878, 3.1.1.1), or undefined when the compressor did
 * not record it or `head` is not the start of a zstd frame. `zstd` records it whenever it knows the input size.
 */
export function zstdContentSize(head: Buffer): number | undefined {
  if (head.length < 5 || head.readUInt32LE(0) !== 0xfd2fb528) return undefined;
  const descriptor = head[4]!;
  const sizeFlag = descriptor >> 6;
  const singleSegment = (descriptor >> 5) & 1;
  const dictionaryIdBytes = [0, 1, 2, 4][descriptor & 3]!;
  const sizeBytes = sizeFlag === 0 ? singleSegment : [0, 2, 4, 8][sizeFlag]!;
  const at = 5 + (singleSegment ? 0 : 1) + dictionaryIdBytes;
  if (sizeBytes === 0 || head.length < at + sizeBytes) return undefined;
  if (sizeBytes === 1) return head[at]!;
  if (sizeBytes === 2) return head.readUInt16LE(at) + 256;
  if (sizeBytes === 4) return head.readUInt32LE(at);
  return Number(head.readBigUInt64LE(at));
}

/** zstd-napi, the streaming decompressor: a native addon, so an optional dependency that may not have installed. */
export type Zstd = typeof import("zstd-napi");

let loaded: Promise<Zstd> | undefined;

/**
 * Loads zstd-napi on first use, so that a machine where it could not compile still downloads everything that is not
 * zstd-compressed. Its absence is `ZSTD_UNAVAILABLE`, reported before a download starts.
 */
export function loadZstd(): Promise<Zstd> {
  loaded ??= import("zstd-napi").catch((err: unknown) => {
    loaded = undefined;
    throw new ArtifactsError(
      "ZSTD_UNAVAILABLE",
      `zstd-napi, the optional dependency that decompresses .zst files, cannot be loaded (${err instanceof Error ? err.message : String(err)}). Install it where it can compile (a C++ compiler, make and Python; or a platform with a prebuilt binary), or download the uncompressed file.`,
      { cause: err },
    );
  });
  return loaded;
}
