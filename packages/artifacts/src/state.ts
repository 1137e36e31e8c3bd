import { readJson, writeFileAtomic } from "./fsutil.js";
import { Ranges } from "./ranges.js";

/**
 * What `<dest>.part.json` records about `<dest>.part`, so that a later run (after a crash or a kill -9) continues
 * it: which download it belongs to, which version of the file it holds, and which byte ranges are on disk.
 */
export interface PartState {
  version: 2;
  /** The URL asked for (an API URL, not the signed storage URL it redirects to). */
  url: string;
  /** What the caller says `url` stands for (a release asset's id and `updated_at`). */
  identity?: string;
  /** The digest expected for the whole file. */
  sha256?: string;
  /** Strong ETag (or Last-Modified) of the file, sent back in If-Range. */
  validator?: string;
  total?: number;
  /** Ranges [start, end) of the .part whose writes completed: in the page cache, not necessarily on the disk. */
  done: [number, number][];
}

/** The earlier run's state, if it belongs to this download and the .part still holds what it lists. */
export async function earlierState(
  metaPath: string,
  partSize: number | undefined,
  want: Pick<PartState, "url" | "identity" | "sha256">,
): Promise<{ state: PartState; onDisk: Ranges } | undefined> {
  const state = await readJson<PartState>(metaPath);
  if (
    state?.version !== 2 ||
    state.url !== want.url ||
    state.identity !== want.identity ||
    state.sha256 !== want.sha256 ||
    state.total === undefined ||
    !Array.isArray(state.done)
  ) {
    return undefined;
  }
  // Without a validator or a digest, resuming could splice two versions of the file together undetected.
  if (state.validator === undefined && want.sha256 === undefined) return undefined;
  const total = state.total;
  const onDisk = new Ranges(
    state.done.filter(([s, e]) => Number.isSafeInteger(s) && Number.isSafeInteger(e) && 0 <= s && e <= total),
  );
  const last = onDisk.intervals.at(-1)?.[1] ?? 0;
  if (partSize === undefined || partSize < last) return undefined;
  return { state, onDisk };
}

/**
 * Writes the state atomically (temp file and rename) soon after every change, at most every `intervalMs`: a kill
 * loses at most that much progress. Ranges enter it only once their writes have completed, so a killed process
 * never leaves a state that claims bytes the file does not hold. A power loss (or an OS crash) can: nothing is
 * fsynced before the state's rename, which may reach the disk before the bytes it lists; only the digest check,
 * when there is a digest, catches what a later run then resumes.
 */
export class StateWriter {
  private timer: NodeJS.Timeout | undefined;
  private writing: Promise<void> | undefined;
  private dirty = false;
  private last = 0;
  private stopped = false;

  constructor(
    private readonly path: string,
    private readonly snapshot: () => PartState,
    private readonly onError: (err: unknown) => void,
    private readonly intervalMs = 50,
  ) {}

  touch(): void {
    this.dirty = true;
    if (this.timer || this.writing || this.stopped) return;
    this.timer = setTimeout(
      () => {
        this.timer = undefined;
        this.write().catch(this.onError);
      },
      Math.max(0, this.last + this.intervalMs - Date.now()),
    );
  }

  /** Writes what is pending now; later changes are no longer written. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.writing?.catch(() => {});
    if (this.dirty) await this.write();
  }

  private async write(): Promise<void> {
    this.dirty = false;
    this.last = Date.now();
    this.writing = writeFileAtomic(this.path, JSON.stringify(this.snapshot()), `${this.path}.tmp`);
    try {
      await this.writing;
    } finally {
      this.writing = undefined;
      if (this.dirty && !this.stopped) this.touch();
    }
  }
}
