/** Durations in config: "90s", "15m", "24h", "7d", "500ms" (Go-style units a PKI operator expects). */
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
export const DURATION_RE = /^(\d+)(ms|s|m|h|d)$/;

export function parseDuration(s: string): number {
  const m = DURATION_RE.exec(s.trim());
  if (!m) throw new Error(`invalid duration "${s}" (expected e.g. 90s, 15m, 24h, 7d)`);
  return Number(m[1]) * UNIT_MS[m[2]!]!;
}

export function formatDuration(ms: number): string {
  for (const [u, f] of [['d', 86_400_000], ['h', 3_600_000], ['m', 60_000], ['s', 1000]] as const) {
    if (ms % f === 0 && ms >= f) return `${ms / f}${u}`;
  }
  return `${ms}ms`;
}
