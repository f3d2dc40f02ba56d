// Small statistics and reporting helpers of the benchmark suite (test/bench).

import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The q-quantile (0..1) of `xs`, nearest-rank on a sorted copy; NaN for none. */
export function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1));
  return s[i]!;
}

export const median = (xs: readonly number[]): number => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

export interface LatencySummary {
  n: number;
  p50: number;
  p99: number;
  mean: number;
}

export function summarize(xs: readonly number[]): LatencySummary {
  return { n: xs.length, p50: quantile(xs, 0.5), p99: quantile(xs, 0.99), mean: xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length) };
}

/** Rounds for tables and JSON (3 significant decimals is plenty for noisy figures). */
export function round(x: number, digits = 3): number {
  if (!Number.isFinite(x)) return x;
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** A plain-text table: a header row and rows of cells, columns padded. */
export function table(title: string, header: string[], rows: Array<Array<string | number>>): string {
  const cells = [header, ...rows.map((r) => r.map((c) => (typeof c === 'number' ? fmt(c) : c)))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [`\n## ${title}`, line(cells[0]!), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.slice(1).map(line)].join('\n');
}

function fmt(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  if (Math.abs(x) >= 100) return x.toFixed(0);
  if (Math.abs(x) >= 10) return x.toFixed(1);
  return x.toFixed(2);
}

export const ARTIFACTS = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'test-artifacts', 'bench');

/** Writes test-artifacts/bench/<name>.json and returns its path. */
export async function writeJson(name: string, data: unknown): Promise<string> {
  await mkdir(ARTIFACTS, { recursive: true });
  const file = join(ARTIFACTS, `${name}.json`);
  await writeFile(file, JSON.stringify(data, null, 2) + '\n');
  return file;
}

/** A deadline helper: every benchmark loop is bounded by count and by time. */
export class Budget {
  private readonly until: number;
  constructor(readonly ms: number) {
    this.until = Date.now() + ms;
  }
  get left(): number {
    return this.until - Date.now();
  }
  get over(): boolean {
    return Date.now() >= this.until;
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Resident set size of a process in bytes (from /proc/<pid>/status VmRSS), undefined when gone. */
export async function rssOf(pid: number): Promise<number | undefined> {
  const { readFile } = await import('node:fs/promises');
  try {
    const s = await readFile(`/proc/${pid}/status`, 'utf8');
    const m = /VmRSS:\s+(\d+)\s+kB/.exec(s);
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/**
 * CPU time (ms, fractional) every thread of a process has run so far, from /proc/<pid>/task/<tid>/schedstat
 * (nanoseconds the scheduler counted): unlike the 10 ms ticks of /proc/<pid>/stat it also counts the
 * short wake-ups of an idle process, and it is exact over the short windows of the throughput and ACME
 * benchmarks. Threads that ended are not counted.
 */
export async function cpuRunMsOf(pid: number): Promise<number | undefined> {
  const { readdir, readFile } = await import('node:fs/promises');
  try {
    let ns = 0;
    for (const tid of await readdir(`/proc/${pid}/task`)) {
      const s = await readFile(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').catch(() => '0');
      ns += Number(s.split(' ')[0]) || 0;
    }
    return ns / 1e6;
  } catch {
    return undefined;
  }
}

/** cpuRunMsOf of each [name, pid], in order: read before and after a window, their difference is its CPU. */
export function cpuRunMsOfAll(pids: ReadonlyArray<readonly [string, number]>): Promise<Array<number | undefined>> {
  return Promise.all(pids.map(([, p]) => cpuRunMsOf(p)));
}

/**
 * At one in flight throughput is the inverse of the round trip, so depth 4 / depth 1 is (G + h) / (G + 4h)
 * for a gateway-only round trip G and a hop h: the best that ratio can be with hops as short as `hopMs`
 * (a floor measured in the same run: a relay's hop is that plus its verification, policy and
 * signature), and the longest hop that 0.70 allows (G / 6).
 */
export function oneInFlightCeiling(gatewayOnlyPerSec: number, hopMs: number): { ceiling: number; hopForTargetMs: number } {
  const g = 1000 / gatewayOnlyPerSec;
  return { ceiling: (g + hopMs) / (g + 4 * hopMs), hopForTargetMs: g / 6 };
}
