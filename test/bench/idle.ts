// Benchmark 0b: what the mesh costs while nothing is asked of it. After the warm-up, the CPU every node
// process and nats-server runs during a quiet window (no envelope in flight), per second, from the
// scheduler's nanosecond counts of all its threads: pull requests that expire, metrics timers, GC.

import { meshPids, type ChainMesh } from './lib/chain-mesh.js';
import { cpuRunMsOfAll, round, sleep, table } from './lib/stats.js';

export async function idleCpu(cm: ChainMesh, o: { windowMs: number }) {
  const pids = meshPids(cm);
  const c0 = await cpuRunMsOfAll(pids);
  const t0 = performance.now();
  await sleep(o.windowMs);
  const c1 = await cpuRunMsOfAll(pids);
  const seconds = (performance.now() - t0) / 1000;
  const perSec = pids.map(([id], i) => [id, c0[i] === undefined || c1[i] === undefined ? NaN : (c1[i]! - c0[i]!) / seconds] as const);
  const isNats = (id: string) => id.startsWith('nats:');
  const isRelay = (id: string) => /-r\d+$/.test(id);
  const row = (name: string, f: (id: string) => boolean) => {
    const xs = perSec.filter(([id]) => f(id)).map(([, v]) => v);
    return { name, processes: xs.length, msPerSec: round(xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length), 2) };
  };
  const rows = [
    row('relay (each, mean)', isRelay),
    row('gateway and edges (each, mean)', (id) => !isNats(id) && !isRelay(id)),
    row('nats-server (each, mean)', isNats),
  ];
  const totalMsPerSec = round(perSec.reduce((a, [, v]) => a + v, 0), 1);
  const result = { what: 'CPU ms per second of each process with nothing in flight (schedstat, all threads)', seconds: round(seconds, 1), rows, totalMsPerSec, perProcess: Object.fromEntries(perSec.map(([id, v]) => [id, round(v, 2)])) };
  const text = table(`0b. Idle CPU (${round(seconds, 1)} s with nothing in flight)`, ['processes', 'n', 'CPU ms/s'], rows.map((r) => [r.name, r.processes, r.msPerSec])) + `\nall ${pids.length} processes together: ${totalMsPerSec} ms/s (${round(totalMsPerSec / 10, 1)}% of one core)`;
  return { name: 'idle', result, text };
}
