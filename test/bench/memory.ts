// Benchmark 4: resident memory (RSS, /proc/<pid>/status VmRSS) of every node process and nats-server
// with 10,000 outstanding orders:
// - the ACME edge holding 10,000 pending orders (newOrder by one account, each with its authorization
//   and challenge in the edge store);
// - 10,000 envelopes outstanding in a chain (edge position -> relay -> gateway): published at the edge
//   position while the gateway is stopped (SIGSTOP), so they pile up in the relay's outbound stream,
//   then the gateway continues (SIGCONT) and works through the backlog for a bounded time.
// RSS is sampled every 250 ms; the peak of each phase is reported next to the idle figure.

import { outStream } from '../../shared/bus/subjects.js';
import { natsPids, type ChainMesh } from './lib/chain-mesh.js';
import { AcmeLoadClient } from './lib/acme-load.js';
import { round, rssOf, sleep, table } from './lib/stats.js';

export interface MemoryOptions {
  outstanding: number;
  /** The chain the envelopes go through (its relays and the gateway). */
  depth: number;
  acme?: { directory: string; ca: string; http01Port: number };
  /** Bounds of each phase. */
  phaseMs: number;
  drainMs: number;
}

const MB = 1024 * 1024;

class Sampler {
  private timer?: NodeJS.Timeout;
  peak = new Map<string, number>();
  constructor(private readonly pids: Array<[string, number]>) {}
  async once(): Promise<Map<string, number>> {
    const now = new Map<string, number>();
    for (const [id, pid] of this.pids) {
      const r = await rssOf(pid);
      if (r === undefined) continue;
      now.set(id, r);
      this.peak.set(id, Math.max(this.peak.get(id) ?? 0, r));
    }
    return now;
  }
  start(): void {
    this.peak = new Map();
    const tick = () => void this.once().finally(() => (this.timer = setTimeout(tick, 250)));
    tick();
  }
  async stop(): Promise<Map<string, number>> {
    clearTimeout(this.timer);
    await this.once();
    return this.peak;
  }
}

export async function memory(cm: ChainMesh, o: MemoryOptions) {
  const started = Date.now();
  const pids: Array<[string, number]> = [...cm.procs.values()]
    .filter((p) => p.id === 'gw' || p.id.startsWith(`d${o.depth}-`) || p.id.startsWith('acme'))
    .map((p) => [p.id, p.pid] as [string, number])
    .concat(natsPids(cm));
  const sampler = new Sampler(pids);
  const idle = await sampler.once();
  const notes: string[] = [];

  // Phase A: 10,000 pending ACME orders at the edge.
  let acmePeak = new Map<string, number>();
  let acmeCreated = 0;
  if (o.acme) {
    const client = new AcmeLoadClient({ directory: o.acme.directory, ca: o.acme.ca, http01Port: o.acme.http01Port, concurrency: 16, maxOrders: o.outstanding, maxMs: o.phaseMs, domain: 'bench.test' });
    sampler.start();
    try {
      await client.init();
      const r = await client.newOrders(o.outstanding, 16, Date.now() + o.phaseMs);
      acmeCreated = r.created;
      if (r.failed) notes.push(`${r.failed} newOrder requests failed`);
    } finally {
      client.close();
      acmePeak = await sampler.stop();
    }
    await sleep(1500);
  }
  const afterAcme = await sampler.once();

  // Phase B: 10,000 envelopes outstanding in the chain while the gateway is stopped.
  const drv = cm.drivers.get(o.depth)!;
  const gw = cm.procs.get('gw')!;
  const relayTop = `d${o.depth}-r1`;
  const jsm = await cm.leaf.jetstreamManager();
  const count = async (node: string) => (await jsm.streams.info(outStream(node))).state.messages;
  let published = 0;
  let queuedAtPeak = 0;
  let issuedDuringDrain = 0;
  sampler.start();
  gw.signal('SIGSTOP');
  let backlogPeak = new Map<string, number>();
  let drainPeak = new Map<string, number>();
  try {
    const deadline = Date.now() + o.phaseMs;
    // Signed and published 64 at a time (the edge's own stream acknowledges each).
    while (published < o.outstanding && Date.now() < deadline) {
      const batch: Array<{ id: string; jws: string }> = [];
      for (let i = 0; i < 64 && published + batch.length < o.outstanding; i++) batch.push(await drv.envelope());
      await Promise.all(batch.map((e) => drv.publish(e)));
      published += batch.length;
    }
    // Until the relay has forwarded them all into its own stream (the gateway's input), bounded.
    while (Date.now() < deadline) {
      queuedAtPeak = o.depth > 0 ? await count(relayTop) : await count(drv.edgeId);
      if (queuedAtPeak >= published) break;
      await sleep(250);
    }
    backlogPeak = await sampler.stop();
  } finally {
    gw.signal('SIGCONT');
  }
  // The gateway works through the backlog for a bounded time.
  sampler.start();
  const before = o.depth > 0 ? await count(relayTop) : await count(drv.edgeId);
  await sleep(o.drainMs);
  drainPeak = await sampler.stop();
  const left = o.depth > 0 ? await count(relayTop) : await count(drv.edgeId);
  issuedDuringDrain = before - left;

  const rows = pids.map(([id]) => ({
    node: id,
    idleMB: round((idle.get(id) ?? NaN) / MB, 1),
    ...(o.acme ? { acmeOrdersPeakMB: round((acmePeak.get(id) ?? NaN) / MB, 1), afterAcmeMB: round((afterAcme.get(id) ?? NaN) / MB, 1) } : {}),
    backlogPeakMB: round((backlogPeak.get(id) ?? NaN) / MB, 1),
    drainPeakMB: round((drainPeak.get(id) ?? NaN) / MB, 1),
  }));
  const result = {
    what: `RSS of every node process with ${o.outstanding} outstanding orders`,
    acmePendingOrders: acmeCreated,
    envelopesPublished: published,
    backlogInRelayStream: queuedAtPeak,
    drainedByGatewayIn: { ms: o.drainMs, envelopes: issuedDuringDrain },
    rows,
    notes,
    ms: Date.now() - started,
  };
  const text = table(
    `4. Memory (RSS MB): ${acmeCreated} pending ACME orders at the edge; ${published} envelopes queued for the gateway (stopped), then ${o.drainMs / 1000} s of draining (${issuedDuringDrain} answered)`,
    ['node', 'idle', ...(o.acme ? [`${acmeCreated} ACME orders (peak)`, 'after'] : []), `${published} queued (peak)`, 'draining (peak)'],
    rows.map((r) => [r.node, r.idleMB, ...(o.acme ? [r.acmeOrdersPeakMB!, r.afterAcmeMB!] : []), r.backlogPeakMB, r.drainPeakMB]),
  );
  return { name: 'memory', result, text };
}
