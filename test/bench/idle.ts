// Benchmark 0b: what the mesh costs while nothing is asked of it. After the warm-up, the CPU every node
// process and nats-server runs during a quiet window (no envelope in flight), per second, from the
// scheduler's nanosecond counts of all its threads: pull requests that expire, metrics timers, GC.

import type { ChainMesh } from './lib/chain-mesh.js';
import { cpuRunMsOf, round, sleep, table } from './lib/stats.js';

export async function idleCpu(cm: ChainMesh, o: { windowMs: number }) {
  const pids = [...cm.procs.values()].map((p) => [p.id, p.pid] as const).concat(cm.m.bus.servers.map((s) => [`nats:${s.spec.name}`, s.pid] as const));
  const c0 = await Promise.all(pids.map(([, p]) => cpuRunMsOf(p)));
  const t0 = performance.now();
  await sleep(o.windowMs);
  const c1 = await Promise.all(pids.map(([, p]) => cpuRunMsOf(p)));
  const seconds = (performance.now() - t0) / 1000;
  const perSec = pids.map(([id], i) => [id, c0[i] === undefined || c1[i] === undefined ? NaN : (c1[i]! - c0[i]!) / seconds] as const);
  const group = (f: (id: string) => boolean) => perSec.filter(([id]) => f(id)).map(([, v]) => v);
  const isNats = (id: string) => id.startsWith('nats:');
  const isRelay = (id: string) => /-r\d+$/.test(id);
  const rows = [
    ['relay (each, mean)', group(isRelay)],
    ['gateway and edges (each, mean)', group((id) => !isNats(id) && !isRelay(id))],
    ['nats-server (each, mean)', group(isNats)],
  ].map(([name, xs]) => ({ name: name as string, processes: (xs as number[]).length, msPerSec: round((xs as number[]).reduce((a, b) => a + b, 0) / Math.max(1, (xs as number[]).length), 2) }));
  const totalMsPerSec = round(perSec.reduce((a, [, v]) => a + v, 0), 1);
  const result = { what: 'CPU ms per second of each process with nothing in flight (schedstat, all threads)', seconds: round(seconds, 1), rows, totalMsPerSec, perProcess: Object.fromEntries(perSec.map(([id, v]) => [id, round(v, 2)])) };
  const text = table(`0b. Idle CPU (${round(seconds, 1)} s with nothing in flight)`, ['processes', 'n', 'CPU ms/s'], rows.map((r) => [r.name, r.processes, r.msPerSec])) + `\nall ${pids.length} processes together: ${totalMsPerSec} ms/s (${round(totalMsPerSec / 10, 1)}% of one core)`;
  return { name: 'idle', result, text };
}
