import { Ranges } from "./ranges.js";

/** A range one connection is fetching: bytes [pos, end) are still to come, over a request that runs to `reqEnd`. */
export interface Claim {
  pos: number;
  /** Moves back when another connection takes over the second half, forward when the claim extends. */
  end: number;
  /** Where the request's answer ends; Infinity while the file's size is unknown. */
  readonly reqEnd: number;
}

/**
 * Which bytes each connection fetches next: the lowest ones nobody has, in pieces, never further than `window`
 * beyond the contiguous prefix (what is beyond it waits in memory for the hash). An idle connection takes over
 * the second half of the claim with the most left, so that a slow connection or the tail of the file does not
 * leave the others idle. A lone connection's request runs to the end of its gap and its claim grows piece by
 * piece, so one connection makes one request.
 */
export class Plan {
  private readonly todo: Ranges;
  private readonly claims = new Set<Claim>();

  constructor(
    /** Bytes still to fetch. */
    missing: Ranges,
    private readonly piece: number,
    private readonly window: number,
    private readonly frontier: () => number,
  ) {
    this.todo = new Ranges(missing.intervals);
  }

  /** Bytes nobody fetches yet. */
  get unclaimed(): number {
    return this.todo.size;
  }

  /** The file is `total` bytes: nothing beyond it is fetched. */
  setTotal(total: number): void {
    this.todo.remove(total, Number.POSITIVE_INFINITY);
    for (const claim of this.claims) claim.end = Math.min(claim.end, total);
  }

  /** The lowest unclaimed piece within the window; `alone` asks for a request to the end of its gap. */
  take(alone: boolean): Claim | undefined {
    const gap = this.todo.first();
    if (!gap || (!alone && gap[0] >= this.frontier() + this.window)) return undefined;
    const [start, gapEnd] = gap;
    const end = Math.min(gapEnd, start + this.piece);
    this.todo.remove(start, end);
    const claim = { pos: start, end, reqEnd: alone ? gapEnd : end };
    this.claims.add(claim);
    return claim;
  }

  /** The second half of the claim with the most left, if that is at least `worth` bytes. */
  steal(worth: number): Claim | undefined {
    let victim: Claim | undefined;
    for (const c of this.claims) if (!victim || c.end - c.pos > victim.end - victim.pos) victim = c;
    if (!victim || victim.end === Number.POSITIVE_INFINITY || victim.end - victim.pos < 2 * worth) {
      return undefined;
    }
    const middle = victim.pos + Math.ceil((victim.end - victim.pos) / 2);
    if (middle >= this.frontier() + this.window) return undefined;
    const claim = { pos: middle, end: victim.end, reqEnd: victim.end };
    victim.end = middle;
    this.claims.add(claim);
    return claim;
  }

  /** Grows a claim whose request runs further by the next piece, if nobody has it. */
  extend(claim: Claim): boolean {
    const gap = this.todo.around(claim.end);
    if (!gap || gap[0] !== claim.end || claim.end >= claim.reqEnd) return false;
    if (claim.end >= this.frontier() + this.window) return false;
    const end = Math.min(gap[1], claim.end + this.piece, claim.reqEnd);
    this.todo.remove(claim.end, end);
    claim.end = end;
    return true;
  }

  /**
   * Only the window keeps the claim from growing: the next piece is free and no free byte comes before it, so
   * waiting for the hash to catch up is better than giving up the connection.
   */
  nextInLine(claim: Claim): boolean {
    return this.todo.first()?.[0] === claim.end && claim.end < claim.reqEnd;
  }

  /** The claim's connection stopped: what it did not fetch is up for grabs again. */
  release(claim: Claim): void {
    this.todo.add(claim.pos, claim.end);
    this.claims.delete(claim);
  }

  finish(claim: Claim): void {
    this.claims.delete(claim);
  }
}
