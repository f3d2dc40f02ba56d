// A benchmark mesh: one gateway on the hub server and, for every depth asked for, a chain of that many
// relays ending in an edge position, all on one leaf server (dc-a). The gateway and the relays run as
// their own `ra-mesh up --only <id> --no-nats` processes (as deployed, so each has its own event loop
// and its RSS can be read); the edge positions are driven by this process through the envelope API
// (like test/integration/mesh.test.ts): it signs with the edge's key, puts the envelope in the edge's
// outbound stream and waits for the signed result on the edge's down subject.
//
// The bus runs with `nats.auth: none` so that the raw NATS request/reply baseline can run between the
// same servers and positions (nkey permissions allow no plain request/reply between nodes); subject
// permissions are checked per published subject with a cache in nats-server, not a per-message cost
// the comparison would hide.

import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { AckPolicy, connect, headers as natsHeaders, RetentionPolicy, StorageType, type NatsConnection } from 'nats';
import { EnvelopeQueue } from '../../../shared/bus/queue.js';
import { downSubject } from '../../../shared/bus/subjects.js';
import { parseDuration } from '../../../shared/config/index.js';
import { loadMeshKeyRing, loadOrCreateNodeKey, newEdgePayload, signEdgeEnvelope, verifyResult, type KeyRing, type NodeKey } from '../../../shared/envelope/index.js';
import { createLogger } from '../../../shared/logging/logger.js';
import { makeCsr } from '../../harness/acme-client.js';
import { startTestMesh, type TestMesh, type TestNode } from '../../harness/mesh.js';
import { sleep } from './stats.js';

export const GATEWAY = 'gw';
export const DC = 'dc-a';
export const DOMAIN = 'bench.test';

export const edgeOf = (depth: number) => `d${depth}-edge`;
/** Relay k (1 = the top, child of the gateway) of the chain of `depth`. */
export const relayOf = (depth: number, k: number) => `d${depth}-r${k}`;

/** The nodes of a chain of `depth` relays under the gateway, edge last. */
export function chainNodes(depth: number, edge: Partial<TestNode> = {}): TestNode[] {
  const out: TestNode[] = [];
  for (let k = 1; k <= depth; k++) out.push({ id: relayOf(depth, k), role: 'relay', dc: DC, parent: k === 1 ? GATEWAY : relayOf(depth, k - 1) });
  out.push({ id: edgeOf(depth), role: 'edge', dc: DC, segment: `seg-d${depth}`, parent: depth === 0 ? GATEWAY : relayOf(depth, depth), ...edge });
  return out;
}

export interface ChainMesh {
  m: TestMesh;
  /** Node processes by id (gateway, relays, and the ACME edges asked for). */
  procs: Map<string, BenchNodeProcess>;
  drivers: Map<number, EdgeDriver>;
  hub: NatsConnection;
  leaf: NatsConnection;
  /** A second connection on the leaf server (the responder of the leaf -> leaf baseline). */
  leaf2: NatsConnection;
  stop(): Promise<void>;
}

/** [name, pid] of every nats-server of the mesh, named nats:<server>. */
export function natsPids(cm: ChainMesh): Array<[string, number]> {
  return cm.m.bus.servers.map((s) => [`nats:${s.spec.name}`, s.pid]);
}

/** [id, pid] of every node process and nats-server of the mesh. */
export function meshPids(cm: ChainMesh): Array<[string, number]> {
  return [...cm.procs.values()].map((p): [string, number] => [p.id, p.pid]).concat(natsPids(cm));
}

export interface ChainMeshOptions {
  depths: number[];
  /** Extra nodes (e.g. an ACME edge) started as processes too. */
  extra?: TestNode[];
  /** Node.js flags of every node process (e.g. --cpu-prof, which NODE_OPTIONS does not take). */
  nodeArgs?: string[];
  /** Only these node ids get `nodeArgs` (default: all): profiling every process at once slows them all. */
  nodeArgsFor?: string[];
  /** Environment of every node process. */
  env?: NodeJS.ProcessEnv;
  /** Pre-made CSRs per driver (reused cyclically; default 64). */
  csrs?: number;
}

/**
 * Starts the mesh; when a node process finds one of its (free a moment ago) ports taken by another
 * process of the machine, the whole mesh is started again on new ports (3 attempts).
 */
export async function startChainMesh(opts: ChainMeshOptions): Promise<ChainMesh> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startChainMeshOnce(opts);
    } catch (e) {
      if (attempt >= 3 || !/EADDRINUSE|address already in use/i.test((e as Error).message)) throw e;
    }
  }
}

async function startChainMeshOnce(opts: ChainMeshOptions): Promise<ChainMesh> {
  const nodes: TestNode[] = [
    { id: GATEWAY, role: 'gateway', dc: 'core', policy: { allow: { dns: [`*.${DOMAIN}`] } } },
    ...opts.depths.flatMap((d) => chainNodes(d)),
    ...(opts.extra ?? []),
  ];
  // Relays bundle under load (envelope.bundle.maxEnvelopes, default 64): BENCH_BUNDLE sets it; 1 turns bundles off.
  const maxEnvelopes = Number(process.env.BENCH_BUNDLE ?? 64);
  const m = await startTestMesh({ nodes, nats: { auth: 'none' }, envelope: { bundle: { maxEnvelopes, maxBytes: 262_144 } }, external: nodes.map((n) => n.id) });
  const procs = new Map<string, BenchNodeProcess>();
  const conns: NatsConnection[] = [];
  const stop = async () => {
    for (const c of conns) await c.close().catch(() => undefined);
    // SIGTERM: the node stops cleanly (and writes its --cpu-prof profile); SIGKILL after 10 s.
    await Promise.all([...procs.values()].map((p) => p.stop()));
    await m.stop();
  };
  try {
    // Every node process at once (each retries its parent's and children's streams until they exist).
    const spawned = nodes.filter((n) => n.role !== 'edge' || (opts.extra ?? []).some((x) => x.id === n.id));
    // All settle before an error is thrown, so the stop below ends every process that did start.
    const started = await Promise.allSettled(spawned.map(async (n) =>
        procs.set(n.id, await spawnNode(m.topologyFile, n.id, { ...opts, nodeArgs: !opts.nodeArgsFor || opts.nodeArgsFor.includes(n.id) ? opts.nodeArgs ?? [] : [] })),
      ),);
    const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    const keys = await loadMeshKeyRing(m.topology);
    const hub = await connect({ servers: m.bus.hubUrl, name: 'bench-hub' });
    const leaf = await connect({ servers: m.bus.dcs[DC]!, name: 'bench-leaf' });
    const leaf2 = await connect({ servers: m.bus.dcs[DC]!, name: 'bench-leaf-2' });
    conns.push(hub, leaf, leaf2);
    const drivers = new Map<number, EdgeDriver>();
    for (const d of opts.depths) {
      const nc = await connect({ servers: m.bus.dcs[DC]!, name: `bench-${edgeOf(d)}` });
      conns.push(nc);
      drivers.set(d, await EdgeDriver.open(m, nc, edgeOf(d), keys, opts.csrs ?? 64));
    }
    return { m, procs, drivers, hub, leaf, leaf2, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

/** Acts as an edge on its leaf server: signs envelopes with the edge's key and awaits their results. */
export class EdgeDriver {
  private readonly waiting = new Map<string, { t0: number; wall: number; resolve: (ms: number) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  private next = 0;
  /** Results that came back valid and verified, and those that did not. */
  valid = 0;
  invalid = 0;
  lastProblem?: string;
  /** Results that did not verify (never expected: a sign of a bug), and the last reason. */
  unverified = 0;
  lastUnverified?: string;
  /** The hop records and gateway times of the last result (ms epoch), for breakdowns. */
  lastTimes?: { sentAt: number; hops: Array<{ node: string; recvAt: number; sentAt: number }>; gateway: { recvAt: number; sentAt: number }; arrivedAt: number };

  private constructor(
    readonly m: TestMesh,
    readonly edgeId: string,
    private readonly key: NodeKey,
    private readonly queue: EnvelopeQueue,
    private readonly csrs: Array<{ csr: string; name: string }>,
  ) {}

  static async open(m: TestMesh, nc: NatsConnection, edgeId: string, keys: KeyRing, csrCount: number): Promise<EdgeDriver> {
    const key = await loadOrCreateNodeKey(m.topology.keysDir(), edgeId);
    const queue = await EnvelopeQueue.open(nc, m.topology, edgeId, { log: createLogger('bench', { as: edgeId }) });
    const csrs = [];
    for (let i = 0; i < csrCount; i++) {
      const name = `${edgeId}-${i}-${randomBytes(3).toString('hex')}.${DOMAIN}`;
      csrs.push({ name, csr: await makeCsr([name]) });
    }
    const d = new EdgeDriver(m, edgeId, key, queue, csrs);
    nc.subscribe(downSubject(edgeId), {
      callback: (_e, msg) => {
        const at = performance.now();
        const text = new TextDecoder().decode(msg.data);
        void verifyResult(text, { topology: m.topology, edge: edgeId, keys }).then(
          (r) => {
            const w = d.waiting.get(r.id);
            if (!w) return;
            d.waiting.delete(r.id);
            clearTimeout(w.timer);
            d.lastTimes = { sentAt: w.wall, hops: r.hops, gateway: r.gateway, arrivedAt: Date.now() };
            if (r.status === 'valid' && r.certificate) d.valid += 1;
            else {
              d.invalid += 1;
              d.lastProblem = JSON.stringify(r.problem);
            }
            w.resolve(at - w.t0);
          },
          (e: Error) => {
            d.unverified += 1;
            d.lastUnverified = e.message;
          },
        );
      },
    });
    await nc.flush();
    return d;
  }

  /** A signed issue envelope for the next CSR of the pool (a fresh id each time). */
  async envelope(): Promise<{ id: string; jws: string }> {
    const c = this.csrs[this.next++ % this.csrs.length]!;
    const node = this.m.topology.node(this.edgeId);
    const payload = newEdgePayload({
      origin: { node: this.edgeId, dc: node.dc, ...(node.segment ? { segment: node.segment } : {}) },
      csr: c.csr,
      identifiers: [{ type: 'dns', value: c.name, validation: { method: 'http-01', at: new Date().toISOString(), from: '127.0.0.1:80' } }],
      account: { id: 'bench-account', eab: null, jwkThumbprint: 'bench' },
      requested: { notBefore: null, notAfter: null },
      renewalOf: null,
      ttlMs: parseDuration('5m'),
    });
    return { id: payload.id, jws: await signEdgeEnvelope(payload, this.key) };
  }

  /**
   * Publishes a signed envelope into the edge's outbound stream and resolves with the ms from the
   * publish until its result arrived (the edge's signing is not counted).
   */
  async send(env: { id: string; jws: string }, timeoutMs = 30_000): Promise<number> {
    const p = new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(env.id);
        reject(new Error(`${this.edgeId}: no result for ${env.id} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiting.set(env.id, { t0: performance.now(), wall: Date.now(), resolve, reject, timer });
    });
    await this.queue.send(env.jws, env.id);
    return p;
  }

  /** Only puts the envelope in the edge's outbound stream (its result is not awaited). */
  async publish(env: { id: string; jws: string }): Promise<void> {
    await this.queue.send(env.jws, env.id);
  }

  async roundTrip(timeoutMs?: number): Promise<number> {
    return this.send(await this.envelope(), timeoutMs);
  }

  /** Sends until one result comes back (the chain's consumers may still be starting), bounded. */
  async warmUp(timeoutMs = 60_000): Promise<void> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      try {
        await this.roundTrip(5_000);
        return;
      } catch (e) {
        if (Date.now() > until) throw new Error(`${this.edgeId}: the chain did not answer within ${timeoutMs} ms (${(e as Error).message})`);
      }
    }
  }
}

const PEER = fileURLToPath(new URL('./peer-process.ts', import.meta.url));

/** Starts peer-process.ts with `args` (connected to `url`); resolves once it is ready (bounded); `stop` ends it. */
async function startPeer(url: string, args: string[]): Promise<{ stop(): void }> {
  const child = spawn(process.execPath, ['--import', 'tsx', PEER, url, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  child.once('exit', () => children.delete(child));
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const until = Date.now() + 30_000;
  while (!/ready/.test(out)) {
    if (child.exitCode !== null || Date.now() > until) {
      child.kill('SIGKILL');
      throw new Error(`bench peer process (${args.join(' ')}) did not start: ${out}`);
    }
    await sleep(50);
  }
  return { stop: () => void child.kill('SIGTERM') };
}

/**
 * Raw NATS request/reply: 256-byte requests sent from `from`, answered by a responder on `to`: a
 * connection of this process, or the URL of a server, where a process of its own answers
 * (peer-process.ts), as a node is a process of its own. Returns a function timing one request (ms).
 * Waits (bounded) until interest has propagated between servers.
 */
export async function rawRequestReply(from: NatsConnection, to: NatsConnection | string, bytes = 256): Promise<{ once(): Promise<number>; close(): void }> {
  const subject = `bench.rr.${randomBytes(6).toString('hex')}`;
  let close: () => void;
  if (typeof to === 'string') {
    const peer = await startPeer(to, ['respond', subject]);
    close = () => peer.stop();
  } else {
    const sub = to.subscribe(subject, { callback: (_e, msg) => msg.respond(msg.data) });
    await to.flush();
    close = () => sub.unsubscribe();
  }
  const payload = randomBytes(bytes);
  const once = async () => {
    const t0 = performance.now();
    await from.request(subject, payload, { timeout: 5_000 });
    return performance.now() - t0;
  };
  for (let i = 0; ; i++) {
    try {
      await from.request(subject, payload, { timeout: 500 });
      break;
    } catch (e) {
      if (i > 100) {
        close();
        throw new Error(`no responder reachable for the raw request/reply: ${(e as Error).message}`);
      }
      await sleep(50);
    }
  }
  return { once, close };
}

/**
 * A bare JetStream hop, the floor of a relay's transit: `from` publishes `bytes` into a file-stored
 * work-queue stream on its server, and a process of its own (peer-process.ts, connected to `toUrl`)
 * holds a pull request on a durable consumer of it, as a parent node does on its child's outbound
 * stream. `once` times the publish until that process has the message (ms, one way; its clock is this
 * machine's), and waits for the PubAck too; nothing is verified or signed. `close` ends the process and
 * removes the stream.
 */
export async function rawJetStreamHop(from: NatsConnection, toUrl: string, bytes = 256): Promise<{ once(): Promise<number>; close(): Promise<void> }> {
  const name = `BENCH_HOP_${randomBytes(4).toString('hex').toUpperCase()}`;
  const subject = `bench.hop.${name}`;
  const jsm = await from.jetstreamManager();
  await jsm.streams.add({ name, subjects: [subject], storage: StorageType.File, retention: RetentionPolicy.Workqueue });
  await jsm.consumers.add(name, { durable_name: 'parent', ack_policy: AckPolicy.Explicit });
  const peer = await startPeer(toUrl, ['pull', name, 'parent']);
  const reply = `bench.hop.reply.${name}`;
  let arrived: ((at: number) => void) | undefined;
  const replies = from.subscribe(reply, { callback: (_e, m) => arrived?.(Number(new TextDecoder().decode(m.data))) });
  await from.flush();
  const js = from.jetstream();
  const payload = randomBytes(bytes);
  const h = natsHeaders();
  h.set('Bench-Reply', reply);
  const once = async () => {
    const got = new Promise<number>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('the JetStream hop did not arrive in 5 s')), 5_000);
      arrived = (at) => {
        clearTimeout(t);
        resolve(at);
      };
    });
    const t0 = performance.timeOrigin + performance.now();
    const ack = js.publish(subject, payload, { headers: h });
    const t1 = await got;
    await ack;
    return t1 - t0;
  };
  await once();
  return {
    once,
    close: async () => {
      replies.unsubscribe();
      peer.stop();
      await jsm.streams.delete(name).catch(() => undefined);
    },
  };
}

const BIN = fileURLToPath(new URL('../../../bin/ra-mesh.js', import.meta.url));

export interface BenchNodeProcess {
  readonly id: string;
  readonly pid: number;
  output(): string;
  /** SIGTERM (a clean stop), SIGKILL if it has not exited within 10 s. */
  stop(): Promise<void>;
  signal(s: NodeJS.Signals): void;
}

const children = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

/** `ra-mesh up <topology> --only <id> --no-nats` with the given Node.js flags; resolves once it says "is up" (bounded). */
export async function spawnNode(topologyFile: string, id: string, opts: { nodeArgs?: string[]; env?: NodeJS.ProcessEnv } = {}): Promise<BenchNodeProcess> {
  const child = spawn(process.execPath, [...(opts.nodeArgs ?? []), BIN, 'up', topologyFile, '--only', id, '--no-nats'], {
    env: { ...process.env, RA_MESH_LOG_LEVEL: process.env.RA_MESH_LOG_LEVEL ?? 'error', ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  let out = '';
  // BENCH_TEE_DIR: every byte a node prints also goes to <dir>/<id>.out (e.g. V8's --trace-opt output).
  const tee = process.env.BENCH_TEE_DIR ? createWriteStream(join(process.env.BENCH_TEE_DIR, `${id}.out`)) : undefined;
  const keep = (d: Buffer) => {
    tee?.write(d);
    out = (out + d).slice(-20_000);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const exited = new Promise<void>((res) => child.once('exit', () => res()));
  void exited.then(() => children.delete(child));
  const alive = () => child.exitCode === null && child.signalCode === null;
  const proc: BenchNodeProcess = {
    id,
    pid: child.pid!,
    output: () => out,
    signal: (s) => {
      if (alive()) child.kill(s);
    },
    stop: async () => {
      if (!alive()) return;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
      tee?.end();
    },
  };
  const until = Date.now() + 60_000;
  while (!/is up/.test(out)) {
    if (!alive()) throw new Error(`node ${id} exited before it was up:\n${out}`);
    if (Date.now() > until) {
      child.kill('SIGKILL');
      throw new Error(`node ${id} not up within 60 s:\n${out}`);
    }
    await sleep(50);
  }
  return proc;
}

/**
 * Sends `perChain` envelopes through every chain, `inFlight` at a time per chain, one chain after the
 * other, then waits 2 s for the machine to go quiet. Stops at `maxMs` whatever is left.
 */
export async function warmUpChains(cm: ChainMesh, o: { perChain: number; inFlight: number; maxMs: number }): Promise<{ sent: number; failed: number; ms: number }> {
  const t0 = Date.now();
  const deadline = t0 + o.maxMs;
  let sent = 0;
  let failed = 0;
  for (const [, drv] of cm.drivers) {
    let left = o.perChain;
    await Promise.all(
      Array.from({ length: o.inFlight }, async () => {
        while (left > 0 && Date.now() < deadline) {
          left -= 1;
          sent += 1;
          await drv.roundTrip(30_000).catch(() => {
            failed += 1;
          });
        }
      }),
    );
  }
  await sleep(2_000);
  return { sent, failed, ms: Date.now() - t0 };
}
