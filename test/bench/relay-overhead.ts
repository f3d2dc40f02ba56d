// Benchmark 1: relay overhead per hop. One envelope at a time, round trip from the publish at the
// edge's position until its signed result is back there, through chains of 0 (the edge under the
// gateway), 1, 2, 4 and 8 relays, against raw NATS request/reply between the same servers:
// leaf -> leaf (the servers a relay-to-relay hop uses) and leaf -> hub (the edge's position to the
// gateway's). A hop goes from one node process to another, so the responder of a raw request/reply is a
// process of its own too (peer-process.ts), woken per request as a node is; the request/reply with both
// ends in this process (the baseline until 2026-12-07, about a quarter faster: one process awake
// does both ends) is reported next to it. Samples of every series are interleaved (one of each in turn),
// so load from anything else on the machine falls on all series alike; rounds are repeated and their
// medians reported.

import { loadavg } from 'node:os';
import type { ChainMesh } from './lib/chain-mesh.js';
import { DC, rawJetStreamHop, rawRequestReply } from './lib/chain-mesh.js';
import { median, quantile, round, table } from './lib/stats.js';

export interface RelayOverheadOptions {
  depths: number[];
  rounds: number;
  samplesPerRound: number;
  /** Upper bound of the whole benchmark; rounds stop early when it is reached. */
  maxMs: number;
}

const means = (p: Record<string, number[]>) => Object.fromEntries(Object.entries(p).map(([k, v]) => [k, round(v.reduce((a, b) => a + b, 0) / Math.max(1, v.length))]));

interface SeriesRound {
  p50: number;
  p99: number;
}

export async function relayOverhead(cm: ChainMesh, o: RelayOverheadOptions) {
  const started = Date.now();
  const rrLeaf = await rawRequestReply(cm.leaf, cm.m.bus.dcs[DC]!);
  const rrHub = await rawRequestReply(cm.leaf, cm.m.bus.hubUrl);
  const rrLeafInProcess = await rawRequestReply(cm.leaf, cm.leaf2);
  // One way: the floor of a relay's transit (a store in its outbound stream, the parent's pull delivery).
  const jsHop = await rawJetStreamHop(cm.leaf, cm.m.bus.dcs[DC]!);
  const series: Record<string, () => Promise<number>> = {
    'raw leaf->leaf': rrLeaf.once,
    'raw leaf->hub': rrHub.once,
    'raw leaf->leaf, in-process': rrLeafInProcess.once,
    'jetstream hop leaf->leaf': jsHop.once,
  };
  // Where a hop's time goes, from the hop records the result carries back (ms epoch, one machine's
  // clock): a relay's work is receipt -> countersigned (verify, policy, sign); the transit is its
  // countersignature -> receipt by the parent (JetStream store + PubAck, then the parent's pull delivery).
  const newParts = () => ({ relayWork: [] as number[], transit: [] as number[], gatewayWork: [] as number[], down: [] as number[] });
  const parts = newParts();
  const partsByDepth = new Map<number, ReturnType<typeof newParts>>();
  for (const d of o.depths) {
    const drv = cm.drivers.get(d)!;
    series[`depth ${d}`] = async () => {
      const ms = await drv.roundTrip(60_000);
      const t = drv.lastTimes;
      if (d > 0 && t && t.hops.length === d) {
        if (!partsByDepth.has(d)) partsByDepth.set(d, newParts());
        for (const x of [parts, partsByDepth.get(d)!]) {
          t.hops.forEach((h, i) => {
            x.relayWork.push(h.sentAt - h.recvAt);
            x.transit.push((i + 1 < d ? t.hops[i + 1]!.recvAt : t.gateway.recvAt) - h.sentAt);
          });
          x.gatewayWork.push(t.gateway.sentAt - t.gateway.recvAt);
          x.down.push(t.arrivedAt - t.gateway.sentAt);
        }
      }
      return ms;
    };
  }
  const names = Object.keys(series);
  const rounds: Array<Record<string, SeriesRound>> = [];
  const pooled: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
  const load: number[] = [];
  for (let r = 0; r < o.rounds && Date.now() - started < o.maxMs; r++) {
    const samples: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
    for (let i = 0; i < o.samplesPerRound && Date.now() - started < o.maxMs; i++) {
      // A different order each pass, so no series always follows the same one.
      const order = [...names].sort(() => Math.random() - 0.5);
      for (const n of order) samples[n]!.push(await series[n]!());
    }
    load.push(loadavg()[0]!);
    rounds.push(Object.fromEntries(names.map((n) => [n, { p50: quantile(samples[n]!, 0.5), p99: quantile(samples[n]!, 0.99) }])));
    for (const n of names) pooled[n]!.push(...samples[n]!);
  }
  rrLeaf.close();
  rrHub.close();
  rrLeafInProcess.close();
  await jsHop.close();

  // Per round: the increase of the round trip over the gateway-only chain, divided by the relays added.
  const perHop = (d: number, q: 'p50' | 'p99') => median(rounds.map((x) => (x[`depth ${d}`]![q] - x['depth 0']![q]) / d));
  const med = (n: string, q: 'p50' | 'p99') => median(rounds.map((x) => x[n]![q]));
  // Least-squares slope of p50 over the depth, per round (every depth weighs in).
  const slope = median(
    rounds.map((x) => {
      const xs = o.depths;
      const ys = xs.map((d) => x[`depth ${d}`]!.p50);
      const mx = xs.reduce((a, b) => a + b, 0) / xs.length;
      const my = ys.reduce((a, b) => a + b, 0) / ys.length;
      return xs.reduce((a, d, i) => a + (d - mx) * (ys[i]! - my), 0) / xs.reduce((a, d) => a + (d - mx) ** 2, 0);
    }),
  );
  const rawLeaf = med('raw leaf->leaf', 'p50');
  const rawLeafP99 = med('raw leaf->leaf', 'p99');
  const rawHub = med('raw leaf->hub', 'p50');
  const rawHubP99 = med('raw leaf->hub', 'p99');
  const rawInProcess = med('raw leaf->leaf, in-process', 'p50');
  const rows = names.map((n) => {
    const d = n.startsWith('depth ') ? Number(n.slice(6)) : undefined;
    return {
      series: n,
      samples: pooled[n]!.length,
      p50Ms: round(med(n, 'p50')),
      p99Ms: round(med(n, 'p99')),
      pooledP99Ms: round(quantile(pooled[n]!, 0.99)),
      maxMs: round(Math.max(...pooled[n]!)),
      /** Round trips over 5 s (a message waiting out ackWait would show here). */
      stalls: pooled[n]!.filter((x) => x > 5_000).length,
      p50VsRawHub: round(med(n, 'p50') / rawHub, 2),
      p99VsRawHub: round(med(n, 'p99') / rawHubP99, 2),
      ...(d ? { perHopP50Ms: round(perHop(d, 'p50')), perHopP99Ms: round(perHop(d, 'p99')), perHopP50VsRawLeaf: round(perHop(d, 'p50') / rawLeaf, 2), perHopP99VsRawLeafP99: round(perHop(d, 'p99') / rawLeafP99, 2), perHopP50VsRawInProcess: round(perHop(d, 'p50') / rawInProcess, 2) } : {}),
    };
  });
  const perHopP50 = median(o.depths.filter((d) => d > 0).map((d) => perHop(d, 'p50')));
  const result = {
    what: 'envelope round trip (publish at the edge position -> result back there), one at a time; raw = 256-byte NATS request/reply',
    rounds: rounds.length,
    samplesPerRound: o.samplesPerRound,
    loadavg1: load.map((l) => round(l, 2)),
    rows,
    perHopP50Ms: round(perHopP50),
    /** Both ends of the raw request/reply in this process (p50): the baseline until 2026-12-07. */
    rawLeafInProcessP50Ms: round(rawInProcess),
    /** The bare JetStream hop (one way, p50): what a relay's transit cannot go below. */
    jetStreamHopP50Ms: round(med('jetstream hop leaf->leaf', 'p50')),
    perHopSlopeMs: round(slope),
    rawLeafP50Ms: round(rawLeaf),
    target: {
      name: 'relay overhead per hop p50 within 3x of a raw NATS request/reply (leaf -> leaf, the responder a process of its own)',
      perHopP50VsRawLeaf: round(perHopP50 / rawLeaf, 2),
      slopeVsRawLeaf: round(slope / rawLeaf, 2),
      /** Against a request/reply with both ends in the bench process (the baseline until 2026-12-07). */
      perHopP50VsRawInProcess: round(perHopP50 / rawInProcess, 2),
      met: perHopP50 / rawLeaf <= 3,
    },
    // Means: the hop records have millisecond resolution, a mean of many is finer than their median.
    breakdownMeanMs: means(parts),
    breakdownMeanMsByDepth: Object.fromEntries([...partsByDepth].map(([d, p]) => [d, means(p)])),
    rounds_detail: rounds.map((x) => Object.fromEntries(Object.entries(x).map(([k, v]) => [k, { p50: round(v.p50), p99: round(v.p99) }]))),
    ms: Date.now() - started,
  };
  const text = table(
    `1. Relay overhead per hop (${rounds.length} rounds x ${o.samplesPerRound}, medians of rounds; load ${result.loadavg1.join('/')})`,
    ['series', 'n', 'p50 ms', 'p99 ms', 'p50/raw hub', 'per-hop p50', 'per-hop p99', 'hop p50/raw leaf', 'hop p99/raw leaf p99', 'hop p50/raw in-process'],
    rows.map((r) => [r.series, r.samples, r.p50Ms, r.p99Ms, r.p50VsRawHub, r.perHopP50Ms ?? '', r.perHopP99Ms ?? '', r.perHopP50VsRawLeaf ?? '', r.perHopP99VsRawLeafP99 ?? '', r.perHopP50VsRawInProcess ?? '']),
  ) + `\nper-hop p50 (median over depths) ${round(perHopP50)} ms = ${result.target.perHopP50VsRawLeaf}x raw leaf->leaf p50 ${round(rawLeaf)} ms (responder a process of its own); slope ${round(slope)} ms/hop = ${result.target.slopeVsRawLeaf}x` +
    `\nagainst raw leaf->leaf with both ends in this process (p50 ${result.rawLeafInProcessP50Ms} ms; the baseline until 2026-12-07): per-hop p50 = ${result.target.perHopP50VsRawInProcess}x` +
    `\na bare JetStream hop (store on the leaf server, pull delivery to another process; one way, nothing verified or signed) p50 ${result.jetStreamHopP50Ms} ms = ${round(result.jetStreamHopP50Ms / rawLeaf, 2)}x raw leaf->leaf` +
    `\nwhere a hop goes (means over ${parts.transit.length} hops): relay work ${result.breakdownMeanMs.relayWork} ms (verify, policy, countersign), ` +
    `transit ${result.breakdownMeanMs.transit} ms (JetStream store + ack, pull delivery to the parent); gateway work ${result.breakdownMeanMs.gatewayWork} ms, result down ${result.breakdownMeanMs.down} ms`;
  return { name: 'relay-overhead', result, text };
}
