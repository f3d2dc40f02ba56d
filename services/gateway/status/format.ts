// Text shared by the status page and `ra-mesh top`, so both show the same numbers the same way.

import type { LatencySummary } from '../../../shared/metrics/latency-window.js';

/** A latency for people: 7ms, 1.2s, 3.5m, 2.0h; '-' when unknown. */
export function formatMs(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '-';
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s`;
  if (ms < 3_600_000) return `${(ms / 60_000).toFixed(1)}m`;
  return `${(ms / 3_600_000).toFixed(1)}h`;
}

/** "p50 3ms / p99 9ms", or "no samples". */
export function formatQuantiles(s: LatencySummary | null | undefined): string {
  if (!s || s.count === 0) return 'no samples';
  return `p50 ${formatMs(s.p50)} / p99 ${formatMs(s.p99)}`;
}
