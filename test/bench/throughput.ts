// Benchmark 2: issuance throughput (certificates/s) through the mesh with the builtin CA, at 1, 16
// and 64 envelopes in flight, through chains of 0 (gateway only: the baseline), 1 and 4 relays.
// Envelopes are signed before each window (the edge's signing is not the mesh's work); each window is
// bounded by a count and a time. Depths alternate within every repeat, and ratios are taken within a
// repeat before their median is reported. CPU time of every node process per certificate is the
// scheduler's run time of all its threads (/proc/<pid>/task/*/schedstat, ns), which the machine's other
// load does not inflate as much as wall time.
// On this machine every process of a chain shares the same cores, so the depth ratio measured is about
// the inverse of the chain's total CPU per certificate. Deployed, each node runs on a machine of its own
// and a chain is a pipeline bounded by its busiest process: the bench also reports that bound, 1000 / the
// largest CPU ms per certificate of any process of the chain (a figure derived from the CPU measured,
// labelled as such; the target is judged on the measured throughput only). It also prints how many
// messages each relay stored for its parent per certificate (its outbound stream's sequences): below 1
// under load, where relays bundle.

import { loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import { outStream } from '../../shared/bus/subjects.js';
import { DC, meshPids, rawJetStreamHop, rawRequestReply, relayOf, type ChainMesh } from './lib/chain-mesh.js';
import { cpuRunMsOfAll, median, oneInFlightCeiling, round, table } from './lib/stats.js';

export interface ThroughputOptions {
  depths: number[];
  inFlight: number[];
  repeats: number;
  /** Most certificates per window: count(inFlight). */
  count: (inFlight: number) => number;
  windowMs: number;
  maxMs: number;
}

interface Window {
  depth: number;
  inFlight: number;
  certs: number;
  seconds: number;
  perSec: number;
  failed: number;
  cpuMsPerCert: Record<string, number>;
  /** Messages each relay of the chain stored for its parent per certificate, the lowest relay first (below 1: bundles). */
  messagesPerCert: number[];
}

/** The last sequence of each relay's outbound stream (all on the leaf server), the lowest relay first. */
async function relaySeqs(cm: ChainMesh, depth: number): Promise<number[]> {
  const jsm = await cm.leaf.jetstreamManager();
  return Promise.all(Array.from({ length: depth }, async (_, i) => (await jsm.streams.info(outStream(relayOf(depth, depth - i)))).state.last_seq));
}

async function window(cm: ChainMesh, depth: number, inFlight: number, count: number, windowMs: number): Promise<Window> {
  const drv = cm.drivers.get(depth)!;
  const envs: Array<{ id: string; jws: string }> = [];
  for (let i = 0; i < count; i++) envs.push(await drv.envelope());
  const pids = meshPids(cm);
  const seq0 = await relaySeqs(cm, depth);
  const cpu0 = await cpuRunMsOfAll(pids);
  const valid0 = drv.valid;
  let next = 0;
  let failed = 0;
  const t0 = performance.now();
  const deadline = t0 + windowMs;
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (next < envs.length && performance.now() < deadline) {
        const e = envs[next++]!;
        try {
          await drv.send(e, 60_000);
        } catch {
          failed += 1;
        }
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  if (failed > 0) {
    // What the chain's processes said (warnings and errors: RA_MESH_LOG_LEVEL, default error).
    for (const p of cm.procs.values()) if (p.id === 'gw' || p.id.startsWith(`d${depth}-`)) console.error(`[${p.id}] ${p.output().slice(-4000)}`);
  }
  if (drv.unverified > 0) throw new Error(`${drv.edgeId}: ${drv.unverified} results did not verify: ${drv.lastUnverified}`);
  const cpu1 = await cpuRunMsOfAll(pids);
  const seq1 = await relaySeqs(cm, depth);
  const certs = drv.valid - valid0;
  const cpuMsPerCert: Record<string, number> = {};
  // Only the processes of this chain (and the gateway and servers) are listed.
  const mine = (id: string) => id === 'gw' || id.startsWith('nats:') || id.startsWith(`d${depth}-`);
  pids.forEach(([id], i) => {
    if (mine(id) && cpu0[i] !== undefined && cpu1[i] !== undefined) cpuMsPerCert[id] = round((cpu1[i]! - cpu0[i]!) / Math.max(1, certs), 2);
  });
  const messagesPerCert = seq1.map((x, i) => round((x - seq0[i]!) / Math.max(1, certs), 3));
  return { depth, inFlight, certs, seconds: round(seconds), perSec: round(certs / seconds, 1), failed, cpuMsPerCert, messagesPerCert };
}

/** The busiest process of a chain (CPU ms per certificate) and the pipeline bound it sets (certificates/s). */
function pipelineBound(cpu: Record<string, number>): { busiest: string; pipelineBoundPerSec: number } {
  const [busiest, ms] = Object.entries(cpu).reduce((a, b) => (b[1] > a[1] ? b : a), ['', 0]);
  return { busiest, pipelineBoundPerSec: ms > 0 ? round(1000 / ms, 1) : NaN };
}

/**
 * The floors of a hop on the leaf server (where the relays of the bench run), means of `n` taken in
 * turn: a raw request/reply answered by a process of its own, and a bare JetStream hop (a store in a
 * stream, the pull delivery to another process), which every store-and-forward relay's transit includes.
 */
async function hopFloors(cm: ChainMesh, n: number): Promise<{ rawMs: number; jetStreamMs: number }> {
  const rr = await rawRequestReply(cm.leaf, cm.m.bus.dcs[DC]!);
  const hop = await rawJetStreamHop(cm.leaf, cm.m.bus.dcs[DC]!);
  try {
    let raw = 0;
    let js = 0;
    for (let i = 0; i < n; i++) {
      raw += await rr.once();
      js += await hop.once();
    }
    return { rawMs: raw / n, jetStreamMs: js / n };
  } finally {
    rr.close();
    await hop.close();
  }
}

export async function throughput(cm: ChainMesh, o: ThroughputOptions) {
  const started = Date.now();
  const windows: Window[] = [];
  const load: number[] = [];
  /** Per repeat: the hop floors measured just before its windows of one in flight. */
  const floors: Array<{ rawMs: number; jetStreamMs: number }> = [];
  for (let r = 0; r < o.repeats && Date.now() - started < o.maxMs; r++) {
    for (const c of o.inFlight) {
      const depths = r % 2 ? [...o.depths].reverse() : o.depths;
      if (c === 1) floors.push(await hopFloors(cm, 100));
      for (const d of depths) windows.push(await window(cm, d, c, o.count(c), o.windowMs));
    }
    load.push(loadavg()[0]!);
  }
  const repeatsDone = load.length;
  const rows: Array<Record<string, unknown>> = [];
  const ratio = (d: number, base: number, c: number) => {
    const rs: number[] = [];
    for (let r = 0; r < repeatsDone; r++) {
      const of = (dd: number) => windows.filter((w) => w.depth === dd && w.inFlight === c)[r];
      const a = of(d);
      const b = of(base);
      if (a && b && b.perSec > 0) rs.push(a.perSec / b.perSec);
    }
    return round(median(rs), 2);
  };
  for (const c of o.inFlight) {
    for (const d of o.depths) {
      const ws = windows.filter((w) => w.depth === d && w.inFlight === c);
      const cpu: Record<string, number> = {};
      for (const k of Object.keys(ws[0]?.cpuMsPerCert ?? {})) cpu[k] = round(median(ws.map((w) => w.cpuMsPerCert[k] ?? NaN)), 2);
      const relays = Object.entries(cpu).filter(([k]) => /-r\d+$/.test(k));
      rows.push({
        inFlight: c,
        depth: d,
        certsPerSec: round(median(ws.map((w) => w.perSec)), 1),
        runs: ws.map((w) => w.perSec),
        certs: ws.reduce((a, w) => a + w.certs, 0),
        failed: ws.reduce((a, w) => a + w.failed, 0),
        vsGatewayOnly: ratio(d, o.depths[0]!, c),
        ...(o.depths.includes(1) && d !== 1 && d > 0 ? { vsDepth1: ratio(d, 1, c) } : {}),
        cpuMsPerCert: cpu,
        gatewayCpuMs: cpu.gw,
        relayCpuMsEach: relays.length ? round(relays.reduce((a, [, v]) => a + v, 0) / relays.length, 2) : 0,
        natsCpuMs: round((cpu['nats:hub'] ?? 0) + (cpu['nats:dc-a'] ?? 0), 2),
        relayMessagesPerCert: Array.from({ length: d }, (_, i) => round(median(ws.map((w) => w.messagesPerCert[i] ?? NaN)), 2)),
        ...pipelineBound(cpu),
      });
    }
  }
  const d4vs1 = o.inFlight.map((c) => ratio(4, 1, c));
  // Derived: the ceiling of the depth ratio at one in flight on this machine (see oneInFlightCeiling).
  const ceilings = floors.flatMap((f, r) => {
    const g = windows.filter((w) => w.depth === 0 && w.inFlight === 1)[r];
    if (!g || g.perSec <= 0) return [];
    return [{ ...f, gatewayOnlyMs: 1000 / g.perSec, raw: oneInFlightCeiling(g.perSec, f.rawMs), js: oneInFlightCeiling(g.perSec, f.jetStreamMs) }];
  });
  const med = (f: (x: (typeof ceilings)[number]) => number, digits: number) => round(median(ceilings.map(f)), digits);
  const oneInFlight = ceilings.length
    ? {
        what: 'depth 4 / depth 1 at 1 in flight if every hop took only a raw leaf->leaf request/reply, or only a bare JetStream hop on the leaf server (store, pull delivery): (G + h) / (G + 4h); 0.70 needs h <= G / 6',
        gatewayOnlyRoundTripMs: med((x) => x.gatewayOnlyMs, 3),
        hopForTargetMs: med((x) => x.raw.hopForTargetMs, 3),
        rawLeafMeanMs: med((x) => x.rawMs, 3),
        ceilingRawHops: med((x) => x.raw.ceiling, 2),
        jetStreamHopMeanMs: med((x) => x.jetStreamMs, 3),
        ceilingJetStreamHops: med((x) => x.js.ceiling, 2),
      }
    : undefined;
  const boundOf = (d: number, c: number) => rows.find((r) => r.depth === d && r.inFlight === c)?.pipelineBoundPerSec as number | undefined;
  const boundD4vs1 = Object.fromEntries(o.inFlight.map((c) => [c, round((boundOf(4, c) ?? NaN) / (boundOf(1, c) ?? NaN), 2)]));
  const result = {
    what: 'certificates/s issued through the mesh (builtin CA), envelopes pre-signed at the edge position',
    repeats: repeatsDone,
    loadavg1: load.map((l) => round(l, 2)),
    rows,
    target: {
      name: 'depth-4 chain throughput at least 70% of depth-1',
      depth4VsDepth1: Object.fromEntries(o.inFlight.map((c, i) => [c, d4vs1[i]])),
      met: d4vs1.every((x) => x >= 0.7),
    },
    /** Derived, not measured throughput: the chain as a pipeline of one core per process (see the header). */
    pipelineBound: { what: '1000 / largest CPU ms per certificate of one process of the chain (a process per core)', depth4VsDepth1: boundD4vs1 },
    ...(oneInFlight ? { oneInFlightCeiling: oneInFlight } : {}),
    windows,
    ms: Date.now() - started,
  };
  const text = table(
    `2. Issuance throughput, builtin CA (${repeatsDone} repeats, medians; load ${result.loadavg1.join('/')})`,
    ['in flight', 'depth', 'certs/s', 'runs', 'vs gw-only', 'vs depth 1', 'gw cpu ms/cert', 'relay cpu ms (each)', 'nats cpu ms', 'msgs up/cert (lowest relay first)', 'busiest', 'bound/s'],
    rows.map((r) => [String(r.inFlight), String(r.depth), r.certsPerSec as number, (r.runs as number[]).join(' '), r.vsGatewayOnly as number, (r.vsDepth1 as number | undefined) ?? '', r.gatewayCpuMs as number, r.relayCpuMsEach as number, r.natsCpuMs as number, (r.relayMessagesPerCert as number[]).join(' / '), r.busiest as string, r.pipelineBoundPerSec as number]),
  ) + `\ndepth 4 / depth 1: ${o.inFlight.map((c, i) => `${c} in flight ${d4vs1[i]}`).join(', ')}` +
    `\nderived, a core per process (1000 / the busiest process's cpu ms per cert): depth 4 / depth 1 ${o.inFlight.map((c) => `${c} in flight ${boundD4vs1[c]}`).join(', ')}` +
    (oneInFlight
      ? `\nceiling at 1 in flight (gateway only ${oneInFlight.gatewayOnlyRoundTripMs} ms; 0.70 needs hops of at most ${oneInFlight.hopForTargetMs} ms): ` +
        `depth 4 / depth 1 <= ${oneInFlight.ceilingJetStreamHops} if a hop were only a bare JetStream store and delivery (${oneInFlight.jetStreamHopMeanMs} ms), ` +
        `<= ${oneInFlight.ceilingRawHops} if only a raw request/reply (${oneInFlight.rawLeafMeanMs} ms)`
      : '');
  return { name: 'throughput', result, text };
}
