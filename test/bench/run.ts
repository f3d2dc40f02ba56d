// The benchmark suite (npm run bench; not part of the test run). One mesh serves every benchmark:
// a gateway (hub server) with chains of 0, 1, 2, 4 and 8 relays (leaf server dc-a), each ending in an
// edge position this process drives, and two ACME edges: one right under the gateway (edge + CA, what
// Pebble is in one process: the target's figure) and one under the 1-relay chain (also used by the
// memory benchmark). Pebble and Caddy's acme_server run next to them for the ACME comparison. Prints
// one table per benchmark and writes test-artifacts/bench/<name>.json plus summary.json (the targets).
//
//   npm run bench                      # everything (about 8-10 minutes on the 2-core machine)
//   npm run bench -- relay throughput  # a subset: crypto, store, relay, throughput, acme, memory
//   BENCH_SCALE=0.3 npm run bench      # shorter windows and fewer samples (a smoke run)
//   BENCH_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" npm run bench -- acme   # profile the node processes
//   BENCH_NODE_ARGS=... BENCH_NODE_ARGS_FOR=gw,d1-r1 npm run bench -- relay        # only those nodes
//   BENCH_TEE_DIR=/tmp/out BENCH_NODE_ARGS=--trace-opt ...                         # each node's output in <dir>/<id>.out
//   BENCH_WARMUP=2000 BENCH_WARMUP_LONE=400 BENCH_WARMUP_MS=120000                # the warm-up (per chain; 0: none)

import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../harness/ports.js';
import { acmeEdge, loadLabel } from './acme-edge.js';
import { cryptoBench } from './crypto.js';
import { storeBench } from './store.js';
import { DC, GATEWAY, natsPids, relayOf, startChainMesh, warmUpChains, type ChainMesh } from './lib/chain-mesh.js';
import { startCaddy, startChallDns, startPebble, runClientHere, selfSignedTls, type AcmePeer, type Proc } from './lib/peers.js';
import { round, table, writeJson } from './lib/stats.js';
import { idleCpu } from './idle.js';
import { memory } from './memory.js';
import { relayOverhead } from './relay-overhead.js';
import { throughput } from './throughput.js';

/** Thrown to skip the mesh when only in-process benchmarks were asked for. */
class Done extends Error {}

const ALL = ['crypto', 'store', 'relay', 'throughput', 'acme', 'memory'] as const;
type Bench = (typeof ALL)[number];
const asked = process.argv.slice(2).filter((a) => !a.startsWith('-'));
const selected = new Set<Bench>(asked.length ? (asked.filter((a) => (ALL as readonly string[]).includes(a)) as Bench[]) : ALL);
if (asked.some((a) => !(ALL as readonly string[]).includes(a))) {
  process.stderr.write(`unknown benchmark in ${asked.join(' ')}; choose from ${ALL.join(', ')}\n`);
  process.exit(2);
}
const scale = Number(process.env.BENCH_SCALE ?? 1);
const S = (n: number, min = 1) => Math.max(min, Math.round(n * scale));
process.env.RA_MESH_LOG_LEVEL ??= 'error';

const DEPTHS = [0, 1, 2, 4, 8];
/** Envelopes sent through every chain before anything is measured (BENCH_WARMUP; 0: none). */
const warmUpCount = S(Number(process.env.BENCH_WARMUP ?? 2_000), 0);
/** Then envelopes sent one at a time through every chain (BENCH_WARMUP_LONE; 0: none). */
const warmUpLone = S(Number(process.env.BENCH_WARMUP_LONE ?? 400), 0);
/** The ACME edge under the 1-relay chain, and the one right under the gateway. */
const ACME_EDGE = 'acme-edge';
const ACME_EDGE_GW = 'acme-edge-gw';
const started = Date.now();
const log = (s: string) => process.stdout.write(`[bench ${((Date.now() - started) / 1000).toFixed(0)}s] ${s}\n`);

const work = await mkdtemp(join(tmpdir(), 'ra-mesh-bench-'));
const stops: Array<() => Promise<void>> = [];
const summary: Record<string, unknown> = {
  startedAt: new Date().toISOString(),
  machine: { cpus: cpus().length, model: cpus()[0]?.model, node: process.version, loadavgAtStart: loadavg().map((l) => round(l, 2)) },
};

try {
  if (selected.has('crypto')) {
    log('0. signatures per hop (in-process)');
    await done(await cryptoBench({ ops: S(2_000, 100) }));
  }
  if (selected.has('store')) {
    log('0c. store writes (in-process)');
    await done(await storeBench({ writes: S(20_000, 1_000), repeats: 3 }));
  }
  const needMesh = ['relay', 'throughput', 'acme', 'memory'].some((b) => selected.has(b as Bench));
  if (!needMesh) throw new Done();
  const needAcme = selected.has('acme') || selected.has('memory');
  let dns: { addr: string; proc: Proc } | undefined;
  let edgeTls: { cert: string; key: string } | undefined;
  let edgeHttp01 = 0;
  if (needAcme) {
    dns = await startChallDns();
    stops.push(() => dns!.proc.stop());
    edgeTls = await selfSignedTls(join(work, 'edge-tls'), 'edge');
    edgeHttp01 = await freePort();
  }
  log('starting the mesh (hub + leaf nats-server, gateway and 15 relays as their own processes)');
  const cm: ChainMesh = await startChainMesh({
    depths: DEPTHS,
    extra: needAcme
      ? [
          { id: ACME_EDGE_GW, parent: GATEWAY },
          { id: ACME_EDGE, parent: relayOf(1, 1) },
        ].map(({ id, parent }) => ({
          id,
          role: 'edge' as const,
          dc: DC,
          segment: id,
          parent,
          // One http-01 port for both: the load client of one turn at a time listens on it.
          acme: { challenges: ['http-01' as const], resolver: dns!.addr, http01Port: edgeHttp01, tls: { cert: edgeTls!.cert, key: edgeTls!.key } },
        }))
      : [],
    // e.g. BENCH_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" to profile every node process.
    ...(process.env.BENCH_NODE_ARGS ? { nodeArgs: process.env.BENCH_NODE_ARGS.split(/\s+/).filter(Boolean) } : {}),
    ...(process.env.BENCH_NODE_ARGS_FOR ? { nodeArgsFor: process.env.BENCH_NODE_ARGS_FOR.split(',').map((s) => s.trim()) } : {}),
  });
  stops.unshift(() => cm.stop());
  for (const [, d] of cm.drivers) await d.warmUp();
  log(`mesh up, every chain answered (${cm.procs.size} node processes)`);
  if (warmUpCount > 0) {
    // The node processes have just started: their code is still unoptimised (V8 tiers a function up
    // after enough calls), and what is measured is a node that has been running. Bounded in count and
    // time (BENCH_WARMUP_MS). 2,000 per chain: with 400, a relay of the depth-4 chain (bundles of 4-8
    // at 16 in flight, so a few hundred messages) still spent 1.4 s of CPU in V8's optimising compiler
    // during the throughput windows (--trace-opt: walk, verifyLayer, onEnvelope, enforceHop, sendBundle).
    // A longer warm-up also ages the gateway's LevelDB, as production does (see README, Benchmarks).
    const w = await warmUpChains(cm, { perChain: warmUpCount, inFlight: 16, maxMs: Number(process.env.BENCH_WARMUP_MS ?? 120_000) });
    log(`warm-up: ${w.sent} envelopes through the chains in ${round(w.ms / 1000, 1)} s (${w.failed} failed)`);
  }
  if (warmUpLone > 0) {
    // At 16 in flight the relays mostly bundle, so the path of a lone envelope (what one in flight takes:
    // the relay benchmark, a quiet segment) was seldom run; V8 then optimises it, or deoptimises and
    // recompiles what the bundles' types had optimised, during the measurement.
    const w = await warmUpChains(cm, { perChain: warmUpLone, inFlight: 1, maxMs: 45_000 });
    log(`warm-up, one at a time: ${w.sent} envelopes through the chains in ${round(w.ms / 1000, 1)} s (${w.failed} failed)`);
  }
  {
    const r = await idleCpu(cm, { windowMs: S(5_000, 2_000) });
    summary.idle = { totalMsPerSec: r.result.totalMsPerSec, rows: r.result.rows };
    await done(r);
  }

  if (selected.has('relay')) {
    log('1. relay overhead');
    const r = await relayOverhead(cm, { depths: DEPTHS, rounds: 3, samplesPerRound: S(100, 10), maxMs: 150_000 });
    summary.relayOverhead = r.result.target;
    await done(r);
  }
  if (selected.has('throughput')) {
    log('2. issuance throughput');
    const r = await throughput(cm, {
      depths: [0, 1, 4],
      inFlight: [1, 16, 64],
      repeats: 3,
      count: (c) => S(c === 1 ? 60 : c === 16 ? 250 : 400, 10),
      windowMs: S(4_000, 500),
      maxMs: 200_000,
    });
    summary.throughput = r.result.target;
    await done(r);
  }
  if (selected.has('acme')) {
    log('3. ACME edge vs Pebble vs Caddy');
    const pebble = await startPebble(join(work, 'pebble'), dns!.addr);
    stops.unshift(() => pebble.stop());
    let caddy: AcmePeer | undefined;
    try {
      caddy = await startCaddy(join(work, 'caddy'));
      stops.unshift(() => caddy!.stop());
    } catch (e) {
      log(`Caddy acme_server could not start; compared with Pebble only: ${(e as Error).message.split('\n')[0]}`);
    }
    // The edge's processes (the edge, the relays above it, the gateway) and the nats-servers: the CPU an order costs.
    const edgePeer = (name: string, id: string, above: string[]): AcmePeer & { cpuPids: () => Array<[string, number]> } => ({
      name,
      directory: `https://${cm.m.topology.acme(id).listen}/acme/directory`,
      caFile: edgeTls!.cert,
      http01Port: edgeHttp01,
      pids: () => [cm.procs.get(id)!.pid],
      cpuPids: () => [id, ...above].map((n): [string, number] => [n, cm.procs.get(n)!.pid]).concat(natsPids(cm)),
      runClient: (args) => runClientHere(args),
      stop: async () => undefined,
    });
    const edges = [edgePeer('edge', ACME_EDGE_GW, [GATEWAY]), edgePeer('edge+relay', ACME_EDGE, [relayOf(1, 1), GATEWAY])];
    // BENCH_ACME_SERVERS=edge,pebble and BENCH_ACME_LOADS=16 narrow the comparison (e.g. to profile one turn kind).
    const pick = (v: string | undefined) => (v ? new Set(v.split(',').map((x) => x.trim())) : undefined);
    const servers = pick(process.env.BENCH_ACME_SERVERS);
    const loads = pick(process.env.BENCH_ACME_LOADS);
    const r = await acmeEdge({
      servers: [...edges, pebble, ...(caddy ? [caddy] : [])].filter((s) => !servers || servers.has(s.name)),
      edges: edges.map((e) => e.name),
      loads: ([
        { concurrency: 1, accounts: 'per-worker' },
        { concurrency: 16, accounts: 'per-worker' },
        { concurrency: 16, accounts: 'shared' },
      ] as const).filter((l) => !loads || loads.has(loadLabel(l))),
      rounds: Number(process.env.BENCH_ACME_ROUNDS ?? 3),
      windowMs: S(5_000, 1_000),
      maxOrders: 2_000,
      maxMs: 480_000,
      // BENCH_ACME_WARMUP orders (0: none) at 16 in flight before the rounds, on each server not restarted per turn.
      warmUp: { concurrency: 16, orders: S(Number(process.env.BENCH_ACME_WARMUP ?? 2_000), 0), maxMs: S(15_000, 3_000) },
      cpuPids: (s) => edges.find((e) => e.name === s.name)?.cpuPids() ?? s.pids().map((p): [string, number] => [s.name, p]),
    });
    summary.acmeEdge = r.result.target;
    await done(r);
  }
  if (selected.has('memory')) {
    log('4. memory at 10,000 outstanding orders');
    const r = await memory(cm, {
      outstanding: S(10_000, 100),
      depth: 1,
      acme: { directory: `https://${cm.m.topology.acme(ACME_EDGE).listen}/acme/directory`, ca: await readFile(edgeTls!.cert, 'utf8'), http01Port: edgeHttp01 },
      phaseMs: 90_000,
      drainMs: S(10_000, 2_000),
    });
    summary.memory = { acmePendingOrders: r.result.acmePendingOrders, envelopesQueued: r.result.backlogInRelayStream, rows: r.result.rows };
    await done(r);
  }
} catch (e) {
  if (!(e instanceof Done)) throw e;
} finally {
  for (const s of stops) await s().catch((e) => log(`stop failed: ${(e as Error).message}`));
  await rm(work, { recursive: true, force: true });
}

summary.totalMs = Date.now() - started;
summary.loadavgAtEnd = loadavg().map((l) => round(l, 2));
const targets = [
  ['relay overhead per hop p50 <= 3x raw NATS request/reply (responder its own process)', summary.relayOverhead],
  ['depth-4 throughput >= 70% of depth-1', summary.throughput],
  ['edge ACME orders/s >= Pebble', summary.acmeEdge],
].filter(([, v]) => v) as Array<[string, { met: boolean } & Record<string, unknown>]>;
const t = table(
  `Targets (run took ${round((Date.now() - started) / 1000, 0)} s; load ${String(summary.machine && (summary.machine as { loadavgAtStart: number[] }).loadavgAtStart[0])} -> ${(summary.loadavgAtEnd as number[])[0]})`,
  ['target', 'figure', 'met'],
  targets.map(([name, v]) => [name, JSON.stringify(Object.fromEntries(Object.entries(v).filter(([k]) => k !== 'name' && k !== 'met'))), v.met ? 'yes' : 'NO']),
);
process.stdout.write(`${t}\n`);
log(`wrote ${await writeJson('summary', summary)}`);

async function done(r: { name: string; result: unknown; text: string }): Promise<void> {
  process.stdout.write(`${r.text}\n`);
  log(`wrote ${await writeJson(r.name, r.result)}`);
}
