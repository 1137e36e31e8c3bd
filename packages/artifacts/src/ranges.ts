/** A set of byte positions kept as sorted, disjoint, non-adjacent half-open intervals [start, end). */
export class Ranges {
  private list: [number, number][] = [];

  constructor(intervals: Iterable<readonly [number, number]> = []) {
    for (const [start, end] of intervals) this.add(start, end);
  }

  get intervals(): readonly (readonly [number, number])[] {
    return this.list;
  }

  /** How many positions the set holds. */
  get size(): number {
    return this.list.reduce((sum, [start, end]) => sum + end - start, 0);
  }

  get empty(): boolean {
    return this.list.length === 0;
  }

  add(start: number, end: number): void {
    if (end <= start) return;
    let lo = start;
    let hi = end;
    const kept: [number, number][] = [];
    for (const [s, e] of this.list) {
      if (e < lo || s > hi) kept.push([s, e]);
      else {
        lo = Math.min(lo, s);
        hi = Math.max(hi, e);
      }
    }
    kept.push([lo, hi]);
    this.list = kept.sort((a, b) => a[0] - b[0]);
  }

  remove(start: number, end: number): void {
    if (end <= start) return;
    const kept: [number, number][] = [];
    for (const [s, e] of this.list) {
      if (e <= start || s >= end) kept.push([s, e]);
      else {
        if (s < start) kept.push([s, start]);
        if (e > end) kept.push([end, e]);
      }
    }
    this.list = kept;
  }

  /** The interval holding `position`, if any. */
  around(position: number): readonly [number, number] | undefined {
    return this.list.find(([s, e]) => s <= position && position < e);
  }

  /** The lowest interval. */
  first(): readonly [number, number] | undefined {
    return this.list[0];
  }
}
