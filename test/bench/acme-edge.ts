// Benchmark 3: the ACME edge against Pebble and Caddy's acme_server on the same machine in the same
// run. The target's edge sits right under the gateway (ACME server + CA, as Pebble is in one process);
// the same edge behind one relay is measured and reported too. Full orders per second (accounts reused,
// a fresh name and http-01 validation per order, the certificate downloaded) by one load client
// (lib/acme-load.ts, run as its own process), at 1 and 16 orders in flight with an account per worker,
// and at 16 with every worker on one account (the load of one busy client, e.g. a cert-manager
// issuer; Caddy's acme_server fails it, see lib/acme-load.ts). Pebble is started afresh before each
// of its turns (lib/peers.ts: it deadlocks under concurrent newOrders), and a turn of it with failed
// orders, or whose load client gave up, is run again, twice at most (the JSON counts those tries).
// Before the rounds, every server that is not started afresh per turn (the edges, Caddy) runs an
// unmeasured warm-up load (`warmUp`, BENCH_ACME_WARMUP orders), as the mesh's chains get their warm-up
// envelopes: a node's ACME path is JavaScript that V8 optimises only after some thousand requests (an
// edge's first 5 s at 16 in flight ran at 135 orders/s and 6.6 ms of its CPU per order, from the third
// 5 s on at about 200 and 3.9 ms), and what an RA that has run for a day does is what is compared. Pebble
// is compiled Go and started afresh per turn, so a warm-up would be lost on it. The warm-up figures are
// printed and kept in the JSON.
// Servers take turns within each round (order rotated per round) and the ratios are taken within a round. CPU per order of the
// server's processes is the scheduler's run time of their threads (/proc/<pid>/task/*/schedstat).

import { loadavg } from 'node:os';
import type { AcmePeer } from './lib/peers.js';
import type { LoadOptions, LoadResult } from './lib/acme-load.js';
import { cpuRunMsOfAll, median, round, table } from './lib/stats.js';

export interface AcmeEdgeOptions {
  servers: AcmePeer[];
  /** The servers that are ra-mesh edges, the target's first: the others are compared with them. */
  edges: string[];
  /** What each turn runs: orders in flight, and whose accounts. */
  loads: Load[];
  rounds: number;
  windowMs: number;
  maxOrders: number;
  maxMs: number;
  /** The unmeasured load each server not started afresh per turn runs first (most orders and seconds; 0 orders: none). */
  warmUp: { concurrency: number; orders: number; maxMs: number };
}

/** The options and where each server's CPU is read (the processes of an edge's path, or the server's own). */
type Options = AcmeEdgeOptions & { cpuPids: (s: AcmePeer) => Array<[string, number]> };

export interface Load {
  concurrency: number;
  accounts: NonNullable<LoadOptions['accounts']>;
}

/** A load's name in the tables and the JSON: "16", or "16 one account". */
export const loadLabel = (l: Load) => (l.accounts === 'shared' && l.concurrency > 1 ? `${l.concurrency} one account` : String(l.concurrency));

/** More tries of a turn with failed orders, for a server started afresh per turn. */
const FRESH_RETRIES = 2;

interface Run {
  server: string;
  load: string;
  concurrency: number;
  round: number;
  result: LoadResult;
  cpuMsPerOrder: Record<string, number>;
}

/** The load client's run against `s`: `l`'s load, at most `maxOrders` orders and `maxMs` of measured window. */
async function runLoad(s: AcmePeer, l: Load, maxOrders: number, maxMs: number): Promise<LoadResult> {
  return (await s.runClient({ directory: s.directory, caFile: s.caFile, http01Port: s.http01Port, concurrency: l.concurrency, accounts: l.accounts, maxOrders, maxMs, domain: 'bench.test' })) as LoadResult;
}

/** One turn: the load client's run against `s`, and the CPU per order of the server's processes. */
async function runTurn(o: Options, s: AcmePeer, l: Load): Promise<Pick<Run, 'result' | 'cpuMsPerOrder'>> {
  const pids = o.cpuPids(s);
  const cpu0 = await cpuRunMsOfAll(pids);
  const result = await runLoad(s, l, o.maxOrders, o.windowMs);
  const cpu1 = await cpuRunMsOfAll(pids);
  // Warm-up orders (one per worker) ran in the same interval.
  const n = Math.max(1, result.orders + l.concurrency);
  return { result, cpuMsPerOrder: Object.fromEntries(pids.map(([id], i) => [id, round((cpu1[i]! - cpu0[i]!) / n, 1)])) };
}

/** A server's warm-up (not measured): what it managed, so a cold start stays visible. */
interface WarmUp {
  server: string;
  orders: number;
  failed: number;
  seconds: number;
  ordersPerSec: number;
  error?: string;
}

async function warmUp(o: Options): Promise<WarmUp[]> {
  const out: WarmUp[] = [];
  if (o.warmUp.orders <= 0) return out;
  for (const s of o.servers.filter((x) => !x.freshEachTurn)) {
    const r = await runLoad(s, { concurrency: o.warmUp.concurrency, accounts: 'per-worker' }, o.warmUp.orders, o.warmUp.maxMs).catch((e: Error) => e);
    const w: WarmUp = r instanceof Error
      ? { server: s.name, orders: 0, failed: 0, seconds: 0, ordersPerSec: 0, error: r.message.split('\n')[0] }
      : { server: s.name, orders: r.orders, failed: r.failed, seconds: round(r.seconds, 1), ordersPerSec: round(r.ordersPerSec, 1) };
    out.push(w);
    process.stdout.write(`[acme] warm-up of ${s.name} at ${o.warmUp.concurrency} in flight (not measured): ${w.error ?? `${w.orders} orders in ${w.seconds} s, ${w.ordersPerSec} orders/s, ${w.failed} failed`}\n`);
  }
  return out;
}

export async function acmeEdge(o: Options) {
  const started = Date.now();
  const runs: Run[] = [];
  const failedTries: Record<string, number> = {};
  const warmUps = await warmUp(o);
  const load: number[] = [];
  for (let r = 0; r < o.rounds && Date.now() - started < o.maxMs; r++) {
    const order = o.servers.map((_, i) => o.servers[(i + r) % o.servers.length]!);
    for (const l of o.loads) {
      for (const s of order) {
        // A server started afresh per turn gets up to FRESH_RETRIES more tries when a turn has failed
        // orders or its load client gave up (Pebble's deadlock; e.g. newAccount timed out before the
        // window): what is measured is its speed, not its bug. The failed tries are counted.
        for (let attempt = 0; ; attempt++) {
          if (s.freshEachTurn) await s.restart!();
          const turn = await runTurn(o, s, l).catch((e: Error) => e);
          const trouble =
            turn instanceof Error
              ? `the load client failed (${turn.message.split('\n').find((x) => /Error|timeout/.test(x)) ?? turn.message.split('\n')[0]})`
              : turn.result.failed > 0
                ? `${turn.result.failed} orders failed (${turn.result.errors[0] ?? ''})`
                : undefined;
          const say = (then: string) => process.stdout.write(`[acme] ${s.name} at ${loadLabel(l)} in flight, round ${r}: ${trouble}; ${then}\n`);
          if (trouble && s.freshEachTurn && attempt < FRESH_RETRIES) {
            failedTries[s.name] = (failedTries[s.name] ?? 0) + 1;
            say('again on a fresh one');
            continue;
          }
          if (turn instanceof Error) {
            // Reported, not fatal: its round has no ratio.
            say('turn skipped');
            break;
          }
          runs.push({ server: s.name, load: loadLabel(l), concurrency: l.concurrency, round: r, ...turn });
          break;
        }
      }
    }
    load.push(loadavg()[0]!);
  }
  const names = o.servers.map((s) => s.name);
  const [edge, ...otherEdges] = o.edges as [string, ...string[]];
  const ratio = (a: string, b: string, l: string) => {
    const rs: number[] = [];
    for (let r = 0; r < load.length; r++) {
      const x = runs.find((u) => u.server === a && u.load === l && u.round === r);
      const y = runs.find((u) => u.server === b && u.load === l && u.round === r);
      // A turn with failed orders measured a server in trouble (Pebble has stalled for 30 s at times): no ratio from it.
      if (x && y && y.result.ordersPerSec > 0 && x.result.failed === 0 && y.result.failed === 0) rs.push(x.result.ordersPerSec / y.result.ordersPerSec);
    }
    return round(median(rs), 2);
  };
  const labels = o.loads.map(loadLabel);
  const rows = o.loads.flatMap((ld) =>
    names.map((n) => {
      const l = loadLabel(ld);
      const c = ld.concurrency;
      const all = runs.filter((u) => u.server === n && u.load === l);
      const clean = all.filter((u) => u.result.failed === 0);
      // Medians over the turns without failures when there are any (the failures are still counted below).
      const rs = clean.length > 0 ? clean : all;
      const cpu: Record<string, number> = {};
      for (const k of Object.keys(rs[0]?.cpuMsPerOrder ?? {})) cpu[k] = round(median(rs.map((u) => u.cpuMsPerOrder[k]!)), 1);
      return {
        server: n,
        load: l,
        concurrency: c,
        accounts: ld.accounts,
        ordersPerSec: round(median(rs.map((u) => u.result.ordersPerSec)), 1),
        runs: rs.map((u) => round(u.result.ordersPerSec, 1)),
        p50Ms: round(median(rs.map((u) => u.result.p50Ms)), 1),
        p99Ms: round(median(rs.map((u) => u.result.p99Ms)), 1),
        orders: all.reduce((a, u) => a + u.result.orders, 0),
        failed: all.reduce((a, u) => a + u.result.failed, 0),
        turnsWithFailures: all.length - clean.length,
        errors: [...new Set(all.flatMap((u) => u.result.errors))].slice(0, 3),
        requestsPerOrder: round(median(rs.map((u) => u.result.requests / Math.max(1, u.result.orders + c))), 1),
        cpuMsPerOrder: cpu,
        cpuMsPerOrderTotal: round(Object.values(cpu).reduce((a, b) => a + b, 0), 1),
        // orders/s of each edge over this server's, within a round (medians).
        ...(o.edges.includes(n) ? {} : { edgesVsThis: Object.fromEntries(o.edges.map((e) => [e, ratio(e, n, l)])) as Record<string, number> }),
      };
    }),
  );
  const vsPebble = (e: string) => Object.fromEntries(labels.map((l) => [l, ratio(e, 'pebble', l)]));
  const edgeVsPebble = vsPebble(edge);
  const result = {
    what: 'full ACME orders/s (accounts reused: one per worker, or one for all; new name + http-01 per order, certificate downloaded), one load client for every server',
    rounds: load.length,
    loadavg1: load.map((l) => round(l, 2)),
    rows,
    target: {
      name: 'edge ACME throughput at or above Pebble on the same machine',
      edgeVsPebble,
      // The same edge behind one relay: reported, not the target (Pebble has no hop between its ACME server and its CA).
      others: Object.fromEntries(otherEdges.map((e) => [e, vsPebble(e)])),
      met: Object.values(edgeVsPebble).every((x) => x >= 1),
    },
    /** Servers started afresh before each of their turns (lib/peers.ts: Pebble), and their tries with failed orders that were run again. */
    freshEachTurn: o.servers.filter((s) => s.freshEachTurn).map((s) => s.name),
    failedTries,
    /** The unmeasured warm-up of each server not started afresh per turn, before the rounds. */
    warmUp: { ...o.warmUp, servers: warmUps },
    runs: runs.map((u) => ({ ...u, result: { ...u.result } })),
    ms: Date.now() - started,
  };
  const text = table(
    `3. ACME orders/s: edge vs Pebble vs Caddy acme_server (${load.length} rounds, medians; load ${result.loadavg1.join('/')})`,
    ['server', 'in flight', 'orders/s', 'runs', 'p50 ms', 'p99 ms', 'failed', 'server cpu ms/order', ...o.edges.map((e) => `${e}/this`)],
    rows.map((r) => [
      r.server, r.load, r.ordersPerSec, r.runs.join(' '), r.p50Ms, r.p99Ms, String(r.failed),
      `${r.cpuMsPerOrderTotal} (${Object.entries(r.cpuMsPerOrder).map(([k, v]) => `${k} ${v}`).join(', ')})`,
      ...o.edges.map((e) => r.edgesVsThis?.[e] ?? ''),
    ]),
  ) + o.edges.map((e) => `\n${e} / pebble: ${Object.entries(vsPebble(e)).map(([l, v]) => `in flight ${l}: ${v}`).join(', ')}`).join('');
  return { name: 'acme-edge', result, text };
}
