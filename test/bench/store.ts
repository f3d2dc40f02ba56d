// Benchmark 0c (in-process, a few seconds): the node store's write path (shared/store/store.ts) against
// LevelDB written directly, on a real LevelDB in a temp dir each.
// - node store: what every node writes through: writes go down in issue order, the ones issued while a
//   LevelDB batch is under way together as the next batch (a group commit), and each write also updates
//   the store's read cache (a JSON copy of the value);
// - level direct: the same puts on a level sublevel, each its own job on the libuv pool (what the
//   store did until 2026-12-02; classic-level leaves their order undefined, so this baseline is faster
//   than any ordered path can be: LevelDB groups the writers it finds waiting, several at a time).
// Workers each await their own put of a JSON value of about 400 bytes, as request handlers do; 1, 16 and 64
// of them at once. Figures are writes/s (wall) and CPU of this process per write (process.cpuUsage: the
// main thread and the pool), medians of repeats taken in turn.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Level } from 'level';
import { NodeStore } from '../../shared/store/index.js';
import { median, round, table } from './lib/stats.js';

type Put = (key: string, value: unknown) => Promise<void>;

async function timeWrites(put: Put, writes: number, inFlight: number): Promise<{ perSec: number; cpuUs: number }> {
  const value = (i: number) => ({ id: `order-${i}`, status: 'processing', identifiers: [{ type: 'dns', value: `host-${i}.bench.test` }], pad: 'p'.repeat(300) });
  let next = 0;
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (next < writes) {
        const i = next++;
        await put(`k${i % 5000}`, value(i));
      }
    }),
  );
  const ms = performance.now() - t0;
  const c = process.cpuUsage(c0);
  return { perSec: round((writes * 1000) / ms, 0), cpuUs: round((c.user + c.system) / writes, 1) };
}

async function withStore<T>(kind: 'node store' | 'level direct', fn: (put: Put) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'ra-mesh-bench-store-'));
  try {
    if (kind === 'node store') {
      const store = await NodeStore.open(dir);
      const c = store.collection<unknown>('x');
      try {
        return await fn((k, v) => c.put(k, v));
      } finally {
        await store.close();
      }
    }
    const db = new Level<string, unknown>(dir, { valueEncoding: 'json' });
    await db.open();
    const sub = db.sublevel<string, unknown>('x', { valueEncoding: 'json' });
    try {
      return await fn((k, v) => sub.put(k, v));
    } finally {
      await db.close();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export async function storeBench(o: { writes: number; repeats: number }) {
  const started = Date.now();
  const kinds = ['node store', 'level direct'] as const;
  const rows: Array<{ inFlight: number; kind: string; perSec: number; cpuUs: number; runs: number[] }> = [];
  for (const inFlight of [1, 16, 64]) {
    const got: Record<string, Array<{ perSec: number; cpuUs: number }>> = { 'node store': [], 'level direct': [] };
    for (let r = 0; r < o.repeats; r++) {
      // Taken in turn, the first of each pair alternating.
      for (const kind of r % 2 === 0 ? kinds : [...kinds].reverse()) {
        got[kind]!.push(await withStore(kind, async (put) => {
          await timeWrites(put, Math.min(500, o.writes), inFlight); // warm-up
          return timeWrites(put, o.writes, inFlight);
        }));
      }
    }
    for (const kind of kinds) {
      const xs = got[kind]!;
      rows.push({ inFlight, kind, perSec: median(xs.map((x) => x.perSec)), cpuUs: median(xs.map((x) => x.cpuUs)), runs: xs.map((x) => x.perSec) });
    }
  }
  const ratio = (inFlight: number, f: 'perSec' | 'cpuUs') => {
    const a = rows.find((r) => r.inFlight === inFlight && r.kind === 'node store')!;
    const b = rows.find((r) => r.inFlight === inFlight && r.kind === 'level direct')!;
    return round(a[f] / b[f], 2);
  };
  const ratios = Object.fromEntries([1, 16, 64].map((n) => [n, { writesPerSec: ratio(n, 'perSec'), cpuPerWrite: ratio(n, 'cpuUs') }]));
  const text =
    table(
      `0c. Store writes: node store (issue order, group commit) vs level direct (${o.writes} puts per run, ${o.repeats} runs each, medians)`,
      ['in flight', 'write path', 'writes/s', 'runs', 'cpu us/write'],
      rows.map((r) => [r.inFlight, r.kind, r.perSec, r.runs.join(' '), r.cpuUs]),
    ) + `\nnode store / level direct: ${Object.entries(ratios).map(([n, r]) => `${n} in flight: writes/s ${r.writesPerSec}, cpu/write ${r.cpuPerWrite}`).join('; ')}`;
  return { name: 'store', result: { what: 'puts/s and CPU per put of one process, node store against level direct', rows, ratios, ms: Date.now() - started }, text };
}
