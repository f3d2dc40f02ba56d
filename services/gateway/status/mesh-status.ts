// The gateway's view of the whole mesh, served as /status.json (the status page and `ra-mesh top`
// read it). Every node of the topology with a `metrics` listener is asked for its /node-status (in
// parallel, bounded, with a timeout: a slow or unreachable node never holds up the others); the
// gateway's own status is read in-process. Gathered on demand, at most once per refresh interval
// whoever asks, so nothing polls the mesh while no one is looking.

import { splitHostPort, urlHost, type Topology } from '../../../shared/config/index.js';
import type { LatencySummary } from '../../../shared/metrics/latency-window.js';
import type { NodeMetrics } from '../../../shared/metrics/node-metrics.js';
import type { InboundLinkState, NatsState, NodeStatus, RefusalRecord } from '../../../shared/metrics/node-status.js';
import { formatQuantiles } from './format.js';
import { layoutTopology, type Layout } from './layout.js';

export type Health = 'ok' | 'warn' | 'down' | 'unknown';

/** A link (or node) is `warn` from this many envelopes waiting in the child's outbound stream. */
export const WARN_QUEUED = 10;
/** ... or when the p99 queue wait over the recent window reaches this. */
export const WARN_WAIT_MS = 1_000;
/** A parent that failed this many reads of a stream it never read is `down`, not just starting. */
const CONNECTING_DOWN_AFTER = 5;

export interface NodeView {
  id: string;
  role: string;
  dc: string;
  segment: string | null;
  parent: string | null;
  health: Health;
  /** Why the health is not ok (null when ok). */
  reason: string | null;
  /** The node answered /node-status this time. */
  reachable: boolean;
  nats: NatsState;
  inFlight: number | null;
  queued: number | null;
  processing: LatencySummary | null;
  issuance: LatencySummary | null;
  counts: NodeStatus['counts'] | null;
  /** Text under the node in the graph. */
  label: string;
}

export interface LinkView {
  child: string;
  parent: string;
  health: Health;
  reason: string | null;
  /** The parent's reading of the child's stream. */
  state: InboundLinkState['state'] | 'unknown';
  /** Envelopes waiting in the child's outbound stream (the child's count). */
  queued: number | null;
  /** Queue wait measured at the parent. */
  wait: LatencySummary | null;
  /** "p50 3ms / p99 9ms" (the link's label in the graph). */
  label: string;
}

export interface MeshStatus {
  v: 1;
  mesh: string;
  gateway: string;
  at: number;
  refreshMs: number;
  nodes: NodeView[];
  links: LinkView[];
  /** The most recent refusals and rejections over all nodes, newest first. */
  refusals: RefusalRecord[];
  totals: { issued: number; refused: number; rejected: number };
  layout: Layout;
}

export interface StatusCollectorOptions {
  /** Answers younger than this are served from the last gathering. Default 1 s. */
  refreshMs?: number;
  /** Per node. Default 1.5 s. */
  timeoutMs?: number;
  /** Nodes asked at once. Default 16. */
  concurrency?: number;
  /** Recent refusals kept in the answer. Default 30. */
  refusals?: number;
}

type Fetched = { ok: true; status: NodeStatus } | { ok: false; error: string };

/** The /node-status URL of a node's metrics listener (a wildcard listen address is asked on loopback). */
export function nodeStatusUrl(listen: string): string {
  const [host, port] = splitHostPort(listen);
  const h = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host;
  return `http://${urlHost(h)}:${port}/node-status`;
}

export class StatusCollector {
  private last?: { at: number; value: Promise<MeshStatus> };
  private readonly o: Required<StatusCollectorOptions>;
  private readonly layout: Layout;

  constructor(
    private readonly topology: Topology,
    private readonly gatewayId: string,
    private readonly self: NodeMetrics,
    opts: StatusCollectorOptions = {},
  ) {
    this.o = { refreshMs: 1_000, timeoutMs: 1_500, concurrency: 16, refusals: 30, ...opts };
    this.layout = layoutTopology(topology);
  }

  current(): Promise<MeshStatus> {
    const now = Date.now();
    if (!this.last || now - this.last.at >= this.o.refreshMs) {
      const value = this.gather();
      this.last = { at: now, value };
      // A failed gathering is not cached.
      value.catch(() => {
        if (this.last?.value === value) this.last = undefined;
      });
    }
    return this.last.value;
  }

  private async fetchOne(id: string): Promise<Fetched | undefined> {
    if (id === this.gatewayId) return { ok: true, status: await this.self.status() };
    const listen = this.topology.node(id).metrics;
    if (!listen) return undefined;
    try {
      const res = await fetch(nodeStatusUrl(listen), { signal: AbortSignal.timeout(this.o.timeoutMs) });
      if (!res.ok) return { ok: false, error: `HTTP ${res.status}` };
      return { ok: true, status: (await res.json()) as NodeStatus };
    } catch (e) {
      const err = e as Error & { cause?: { code?: string } };
      return { ok: false, error: err.name === 'TimeoutError' ? `no answer within ${this.o.timeoutMs} ms` : (err.cause?.code ?? err.message) };
    }
  }

  private async gather(): Promise<MeshStatus> {
    const ids = this.topology.nodes.map((n) => n.id);
    const fetched = new Map<string, Fetched | undefined>();
    let next = 0;
    const worker = async () => {
      while (next < ids.length) {
        const id = ids[next++]!;
        fetched.set(id, await this.fetchOne(id));
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.o.concurrency, ids.length) }, worker));
    return buildMeshStatus(this.topology, this.gatewayId, fetched, { refreshMs: this.o.refreshMs, refusals: this.o.refusals, layout: this.layout });
  }
}

/** The mesh view from what each node answered (undefined: the node has no metrics listener). */
export function buildMeshStatus(
  topology: Topology,
  gatewayId: string,
  fetched: Map<string, Fetched | undefined>,
  opts: { refreshMs: number; refusals: number; layout?: Layout },
): MeshStatus {
  const statusOf = (id: string) => {
    const f = fetched.get(id);
    return f?.ok ? f.status : undefined;
  };
  const nodes: NodeView[] = topology.nodes.map((n) => {
    const f = fetched.get(n.id);
    const s = f?.ok ? f.status : undefined;
    const [health, reason] = nodeHealth(f);
    return {
      id: n.id,
      role: n.role,
      dc: n.dc,
      segment: n.segment ?? null,
      parent: n.parent ?? null,
      health,
      reason,
      reachable: s !== undefined,
      nats: s?.nats.state ?? 'unknown',
      inFlight: s?.inFlight ?? null,
      queued: s?.queued ?? null,
      processing: s?.processing ?? null,
      issuance: s?.issuance ?? null,
      counts: s?.counts ?? null,
      // Edge: finalize -> result (end to end); relays and gateway: their own processing.
      label: !s ? (f === undefined ? 'no status listener' : 'not reachable') : `${n.role === 'edge' ? 'e2e' : 'proc'} ${formatQuantiles(s.role === 'edge' ? s.issuance : s.processing)}`,
    };
  });
  const links: LinkView[] = topology.nodes
    .filter((n) => n.parent !== undefined)
    .map((n) => {
      const child = statusOf(n.id);
      const parent = statusOf(n.parent!);
      const l = parent?.links.find((x) => x.child === n.id);
      const wait = parent?.wait[n.id] ?? null;
      const [health, reason] = linkHealth(child, parent, l, wait, fetched.get(n.id) === undefined);
      return {
        child: n.id,
        parent: n.parent!,
        health,
        reason,
        state: l?.state ?? 'unknown',
        queued: child?.queued ?? null,
        wait,
        label: formatQuantiles(wait),
      };
    });
  const refusals = [...fetched.values()]
    .flatMap((f) => (f?.ok ? f.status.refusals : []))
    .sort((a, b) => b.at - a.at)
    .slice(0, opts.refusals);
  const sum = (pick: (s: NodeStatus) => Record<string, number>) =>
    [...fetched.values()].reduce((t, f) => t + (f?.ok ? Object.values(pick(f.status)).reduce((a, b) => a + b, 0) : 0), 0);
  return {
    v: 1,
    mesh: topology.config.mesh,
    gateway: gatewayId,
    at: Date.now(),
    refreshMs: opts.refreshMs,
    nodes,
    links,
    refusals,
    totals: { issued: statusOf(gatewayId)?.counts.processed.issued ?? 0, refused: sum((s) => s.counts.refused), rejected: sum((s) => s.counts.rejected) },
    layout: opts.layout ?? layoutTopology(topology),
  };
}

export function nodeHealth(f: Fetched | undefined): [Health, string | null] {
  if (f === undefined) return ['unknown', 'no metrics listener in the topology'];
  if (!f.ok) return ['down', `status not reachable: ${f.error}`];
  const s = f.status;
  if (s.nats.state !== 'connected') return ['down', `NATS ${s.nats.state}`];
  if (s.queued !== null && s.queued >= WARN_QUEUED) return ['warn', `${s.queued} envelopes queued for the parent`];
  return ['ok', null];
}

/** Health of the link child -> parent from both ends: the parent's reading of the stream, the child's queue. */
export function linkHealth(
  child: NodeStatus | undefined,
  parent: NodeStatus | undefined,
  link: InboundLinkState | undefined,
  wait: LatencySummary | null,
  childUnlisted = false,
): [Health, string | null] {
  if (child && child.nats.state !== 'connected') return ['down', `${child.node}: NATS ${child.nats.state}`];
  if (!parent) return ['unknown', 'the parent\'s status is not available'];
  if (parent.nats.state !== 'connected') return ['down', `${parent.node}: NATS ${parent.nats.state}`];
  if (!link) return ['unknown', 'the parent does not read this stream'];
  if (link.state === 'down') return ['down', `the parent cannot read the stream: ${link.lastError ?? 'failing'}`];
  if (link.state === 'connecting') {
    return link.failures >= CONNECTING_DOWN_AFTER
      ? ['down', `the parent has never read the stream: ${link.lastError ?? 'failing'}`]
      : ['warn', 'the parent is connecting to the stream'];
  }
  if (child?.queued !== null && child?.queued !== undefined && child.queued >= WARN_QUEUED) return ['warn', `${child.queued} envelopes queued`];
  if (wait && wait.count > 0 && wait.p99 !== null && wait.p99 >= WARN_WAIT_MS) return ['warn', `p99 queue wait ${Math.round(wait.p99)} ms`];
  if (!child && !childUnlisted) return ['warn', 'the child\'s status is not reachable'];
  return ['ok', null];
}
