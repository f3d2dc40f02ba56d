// Exact quantiles over the recent past, for the status page and `ra-mesh top` (Prometheus gets the
// histograms; a dashboard computes its quantiles from their buckets). A ring of the last `max`
// samples, of which those younger than `maxAgeMs` count.

export interface LatencySummary {
  /** Samples in the window. */
  count: number;
  /** Milliseconds; null when the window is empty. */
  p50: number | null;
  p99: number | null;
  max: number | null;
}

export class LatencyWindow {
  private readonly at: Float64Array;
  private readonly ms: Float64Array;
  private next = 0;
  private size = 0;

  constructor(
    private readonly max = 2048,
    private readonly maxAgeMs = 5 * 60_000,
  ) {
    this.at = new Float64Array(max);
    this.ms = new Float64Array(max);
  }

  add(ms: number, now = Date.now()): void {
    this.at[this.next] = now;
    this.ms[this.next] = ms;
    this.next = (this.next + 1) % this.max;
    if (this.size < this.max) this.size += 1;
  }

  /** p50/p99 (nearest rank) of the samples younger than maxAgeMs. */
  summary(now = Date.now()): LatencySummary {
    const vals: number[] = [];
    for (let i = 0; i < this.size; i++) if (now - this.at[i]! <= this.maxAgeMs) vals.push(this.ms[i]!);
    if (vals.length === 0) return { count: 0, p50: null, p99: null, max: null };
    vals.sort((a, b) => a - b);
    return { count: vals.length, p50: nearestRank(vals, 0.5), p99: nearestRank(vals, 0.99), max: vals[vals.length - 1]! };
  }
}

/** The nearest-rank quantile of sorted values: the smallest value with at least q of the samples at or below it. */
export function nearestRank(sorted: readonly number[], q: number): number {
  const rank = Math.max(1, Math.ceil(q * sorted.length));
  return sorted[rank - 1]!;
}
