// Prometheus metrics of one node (prom-client), in a registry of its own so that several nodes in one
// process (ra-mesh up) never mix their numbers. Every series carries the node id and role as labels.
// Served on the node's `metrics` listener (topology) at /metrics, with the node's own status (JSON,
// read by the gateway's status page and `ra-mesh top`) at /node-status; the gateway also serves
// /metrics on its HTTP port. deploy/grafana-dashboard.json charts these names.
//
// Where each series is measured:
//   relay, gateway  ramesh_hop_queue_wait_seconds{from}   a child's message: JetStream store time -> received here
//                   ramesh_hop_processing_seconds{outcome} received -> next durable step (forwarded, answered)
//                   ramesh_requests_refused_total{layer,reason}, ramesh_link_up{child}
//   gateway         ramesh_cas_request_duration_seconds{op,outcome}, ramesh_cas_errors_total{op,reason},
//                   ramesh_cas_calls_in_flight{state} (running, waiting for a slot of cas.maxInFlight)
//   edge            ramesh_issuance_duration_seconds{status} (finalize -> result), ramesh_results_received_total{status,by},
//                   ramesh_acme_requests_total{endpoint,method,status}, ramesh_acme_request_duration_seconds{endpoint}
//   edge, relay     ramesh_envelopes_queued (own outbound stream, waiting for the parent)
//   every node      ramesh_envelopes_rejected_total{reason}, ramesh_envelopes_in_flight,
//                   ramesh_nats_connected, ramesh_nats_reconnects_total

import { createServer, type Server } from 'node:http';
import type { NatsConnection } from 'nats';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { splitHostPort, urlHost } from '../config/index.js';
import { LatencyWindow } from './latency-window.js';
import type { InboundLinkState, NatsState, NodeStatus, RefusalRecord } from './node-status.js';

/** Hop latencies: milliseconds in a healthy mesh, hours while a link is down (store-and-forward). */
const WAIT_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 21600, 86400];
const PROCESSING_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
const ISSUANCE_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 86400];
/** Requests per message a relay sends up: 1 alone, more in a bundle (envelope.bundle.maxEnvelopes, at most 1024). */
const BUNDLE_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 1024];
const HTTP_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

const RECENT_REFUSALS = 50;
/** How often prom-client samples the event-loop delay (ramesh_nodejs_eventloop_lag_*). */
const EVENT_LOOP_SAMPLE_MS = 100;
const QUEUED_CACHE_MS = 500;
const QUEUED_TIMEOUT_MS = 400;
const ACME_PROBLEM_PREFIX = 'urn:ietf:params:acme:error:';

/** What a service tells its metrics about state it owns (asked for at every scrape). */
export interface MetricSources {
  inFlight?: () => number;
  /** Messages in the node's outbound stream; null when it cannot be read now. */
  queued?: () => Promise<number | null>;
  links?: () => InboundLinkState[];
  /** Gateway: calls to the CA service under way and waiting for a slot (cas.maxInFlight). */
  casCalls?: () => { running: number; waiting: number };
}

type Role = 'edge' | 'relay' | 'gateway' | string;

export class NodeMetrics {
  readonly registry = new Registry();
  readonly startedAt = Date.now();
  /** Envelopes and results a node refused to handle, by reason (malformed, bad-signature, replayed, ...). */
  readonly envelopesRejected: Counter<'reason'>;
  /** Requests answered with a problem document, by the layer that refused and the ACME problem type. */
  readonly requestsRefused: Counter<'layer' | 'reason'>;
  readonly hopQueueWait: Histogram<'from'>;
  readonly hopProcessing: Histogram<'outcome'>;
  readonly envelopesInFlight: Gauge;
  readonly sentRequests: Histogram;
  readonly envelopesQueued: Gauge;
  readonly linkUp: Gauge<'child'>;
  readonly natsConnected: Gauge;
  readonly natsReconnects: Counter;
  readonly issuanceDuration: Histogram<'status'>;
  readonly resultsReceived: Counter<'status' | 'by'>;
  readonly acmeRequests: Counter<'endpoint' | 'method' | 'status'>;
  readonly acmeRequestDuration: Histogram<'endpoint'>;
  readonly casDuration: Histogram<'op' | 'outcome'>;
  readonly casErrors: Counter<'op' | 'reason'>;
  readonly casCalls: Gauge<'state'>;

  private sources: MetricSources = {};
  private nats: NatsState = 'unknown';
  private reconnects = 0;
  private readonly waitWindows = new Map<string, LatencyWindow>();
  private readonly processingWindow = new LatencyWindow();
  private readonly issuanceWindow = new LatencyWindow();
  private readonly recent: RefusalRecord[] = [];
  private queuedCache?: { at: number; value: Promise<number | null> };

  constructor(readonly node: string, readonly role: Role, opts: { processMetrics?: boolean } = {}) {
    const reg = this.registry;
    reg.setDefaultLabels({ node, role });
    const on = (...roles: Role[]) => (roles.includes(role) ? [reg] : []);
    const self = this;
    this.envelopesRejected = new Counter({
      name: 'ramesh_envelopes_rejected_total',
      help: 'Envelopes dropped by this node because they failed verification, by reason',
      labelNames: ['reason'],
      registers: [reg],
    });
    this.requestsRefused = new Counter({
      name: 'ramesh_requests_refused_total',
      help: 'Requests this node answered with a problem document, by the refusing layer (node id, or cas) and ACME problem type',
      labelNames: ['layer', 'reason'],
      registers: on('relay', 'gateway'),
    });
    this.hopQueueWait = new Histogram({
      name: 'ramesh_hop_queue_wait_seconds',
      help: "Time an envelope waited in a child's outbound stream: JetStream store time to receipt here, by child",
      labelNames: ['from'],
      buckets: WAIT_BUCKETS,
      registers: on('relay', 'gateway'),
    });
    this.hopProcessing = new Histogram({
      name: 'ramesh_hop_processing_seconds',
      help: 'Time from receipt to the next durable step (forwarded, answered, dropped), by outcome',
      labelNames: ['outcome'],
      buckets: PROCESSING_BUCKETS,
      registers: on('relay', 'gateway'),
    });
    this.sentRequests = new Histogram({
      name: 'ramesh_sent_requests',
      help: 'Requests in each message this relay stored for its parent: 1 alone, more in a bundle',
      buckets: BUNDLE_BUCKETS,
      registers: on('relay'),
    });
    this.envelopesInFlight = new Gauge({
      name: 'ramesh_envelopes_in_flight',
      help: 'Envelopes this node has accepted and not finished: being handled (relay, gateway) or awaiting their result (edge outbox)',
      registers: [reg],
      collect() {
        this.set(self.sources.inFlight?.() ?? 0);
      },
    });
    this.envelopesQueued = new Gauge({
      name: 'ramesh_envelopes_queued',
      help: "Envelopes in this node's outbound stream waiting for its parent to take them (-1: the stream cannot be read now)",
      registers: on('edge', 'relay'),
      async collect() {
        this.set((await self.queued()) ?? -1);
      },
    });
    this.linkUp = new Gauge({
      name: 'ramesh_link_up',
      help: "1 when this node's last read of a child's outbound stream worked, by child",
      labelNames: ['child'],
      registers: on('relay', 'gateway'),
      collect() {
        this.reset();
        for (const l of self.sources.links?.() ?? []) this.set({ child: l.child }, l.state === 'up' ? 1 : 0);
      },
    });
    this.natsConnected = new Gauge({
      name: 'ramesh_nats_connected',
      help: "1 while this node's NATS connection is up",
      registers: [reg],
      collect() {
        this.set(self.nats === 'connected' ? 1 : 0);
      },
    });
    this.natsReconnects = new Counter({
      name: 'ramesh_nats_reconnects_total',
      help: 'Times this node reconnected to its NATS server',
      registers: [reg],
    });
    this.issuanceDuration = new Histogram({
      name: 'ramesh_issuance_duration_seconds',
      help: 'End to end: ACME finalize to the result arriving back at this edge, by result status (valid, invalid)',
      labelNames: ['status'],
      buckets: ISSUANCE_BUCKETS,
      registers: on('edge'),
    });
    this.resultsReceived = new Counter({
      name: 'ramesh_results_received_total',
      help: 'Verified results of issue envelopes received by this edge, by status and by the node that signed them (the gateway, or the relay that refused)',
      labelNames: ['status', 'by'],
      registers: on('edge'),
    });
    this.acmeRequests = new Counter({
      name: 'ramesh_acme_requests_total',
      help: 'ACME requests answered by this edge, by endpoint (route), method and HTTP status',
      labelNames: ['endpoint', 'method', 'status'],
      registers: on('edge'),
    });
    this.acmeRequestDuration = new Histogram({
      name: 'ramesh_acme_request_duration_seconds',
      help: 'ACME request handling time at this edge, by endpoint (route)',
      labelNames: ['endpoint'],
      buckets: HTTP_BUCKETS,
      registers: on('edge'),
    });
    this.casDuration = new Histogram({
      name: 'ramesh_cas_request_duration_seconds',
      help: 'Calls to the CA service, by operation (sign, revoke) and outcome (ok, refused: a final answer, failed: retried later)',
      labelNames: ['op', 'outcome'],
      buckets: PROCESSING_BUCKETS,
      registers: on('gateway'),
    });
    this.casErrors = new Counter({
      name: 'ramesh_cas_errors_total',
      help: 'CA service calls that ended in an error, by operation and reason',
      labelNames: ['op', 'reason'],
      registers: on('gateway'),
    });
    this.casCalls = new Gauge({
      name: 'ramesh_cas_calls_in_flight',
      help: 'Calls to the CA service by state: running, or waiting for a slot (at most cas.maxInFlight run at once)',
      labelNames: ['state'],
      registers: on('gateway'),
      collect() {
        const c = self.sources.casCalls?.() ?? { running: 0, waiting: 0 };
        this.set({ state: 'running' }, c.running);
        this.set({ state: 'waiting' }, c.waiting);
      },
    });
    // Event-loop delay sampled every 100 ms, not prom-client's 10 ms: a timer firing 100 times a second
    // in every idle node process (15 of them in test/bench) costs CPU and wakes the machine for nothing
    // an operator reads; a stall of the loop longer than that still shows in the percentiles.
    if (opts.processMetrics) collectDefaultMetrics({ register: this.registry, prefix: 'ramesh_', eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS });
  }

  /** State the service owns: its in-flight count, outbound stream depth, inbound links. */
  bind(sources: MetricSources): void {
    this.sources = { ...this.sources, ...sources };
  }

  /** Follows a NATS connection's state (several listeners may watch one connection). */
  watchNats(nc: NatsConnection): void {
    this.nats = nc.isClosed() ? 'closed' : 'connected';
    void (async () => {
      for await (const s of nc.status()) {
        if (s.type === 'disconnect') this.nats = 'disconnected';
        else if (s.type === 'reconnecting') this.nats = 'reconnecting';
        else if (s.type === 'reconnect') {
          this.nats = 'connected';
          this.reconnects += 1;
          this.natsReconnects.inc();
        }
      }
    })().catch(() => undefined);
    void nc.closed().then(() => {
      this.nats = 'closed';
    });
  }

  /** A message taken from a child's outbound stream, `waitMs` after the stream stored it (queue.ts). */
  received(from: string, waitMs: number): void {
    this.hopQueueWait.observe({ from }, waitMs / 1000);
    let w = this.waitWindows.get(from);
    if (!w) this.waitWindows.set(from, (w = new LatencyWindow()));
    w.add(waitMs);
  }

  /** The handling of one received envelope ended (recvAt: Date.now() at receipt). */
  hopDone(outcome: string, recvAt: number): void {
    const ms = Date.now() - recvAt;
    this.hopProcessing.observe({ outcome }, ms / 1000);
    // Junk and retries are not hop latency of a request.
    if (outcome !== 'rejected' && outcome !== 'retry') this.processingWindow.add(ms);
  }

  /** An envelope or result that failed verification and was dropped. */
  /** A relay stored one message for its parent, carrying `requests` requests. */
  sentUp(requests: number): void {
    this.sentRequests.observe(requests);
  }

  /** A message, or a request of a bundle, that did not verify: rejected() and its hop time. */
  envelopeRejected(reason: string, recvAt: number, envelopeId?: string): void {
    this.rejected(reason, envelopeId);
    this.hopDone('rejected', recvAt);
  }

  rejected(reason: string, envelopeId?: string): void {
    this.envelopesRejected.inc({ reason });
    this.remember({ kind: 'rejected', layer: this.node, reason, envelopeId: envelopeId ?? null, detail: null });
  }

  /** A request answered with a problem document; `layer` is the policy layer (node id) or `cas`. */
  refused(layer: string, problemType: string, envelopeId: string, detail?: string): void {
    const reason = problemType.startsWith(ACME_PROBLEM_PREFIX) ? problemType.slice(ACME_PROBLEM_PREFIX.length) : problemType;
    this.requestsRefused.inc({ layer, reason });
    this.remember({ kind: 'refused', layer, reason, envelopeId, detail: detail ? detail.slice(0, 300) : null });
  }

  /** Edge: the result of an order arrived `ms` after finalize. */
  issuance(status: 'valid' | 'invalid', ms: number | undefined): void {
    if (ms === undefined) return;
    this.issuanceDuration.observe({ status }, ms / 1000);
    this.issuanceWindow.add(ms);
  }

  /** Gateway: one call to the CA service. */
  cas(op: 'sign' | 'revoke', outcome: 'ok' | 'refused' | 'failed', ms: number, errorReason?: string): void {
    this.casDuration.observe({ op, outcome }, ms / 1000);
    if (outcome !== 'ok') this.casErrors.inc({ op, reason: errorReason ?? 'error' });
  }

  /** Edge: one ACME request answered. */
  acmeRequest(endpoint: string, method: string, status: number, ms: number): void {
    this.acmeRequests.inc({ endpoint, method, status: String(status) });
    this.acmeRequestDuration.observe({ endpoint }, ms / 1000);
  }

  private remember(r: Omit<RefusalRecord, 'at' | 'node'>): void {
    this.recent.push({ at: Date.now(), node: this.node, ...r });
    if (this.recent.length > RECENT_REFUSALS) this.recent.splice(0, this.recent.length - RECENT_REFUSALS);
  }

  private queued(): Promise<number | null> {
    const src = this.sources.queued;
    if (!src) return Promise.resolve(null);
    const now = Date.now();
    if (!this.queuedCache || now - this.queuedCache.at > QUEUED_CACHE_MS) {
      // Asking a server that is gone would hold /metrics and /node-status until the request times
      // out: while NATS is not connected, or when the server is slow, the depth is unknown (null).
      let timer: NodeJS.Timeout | undefined;
      const value =
        this.nats !== 'connected' && this.nats !== 'unknown'
          ? Promise.resolve(null)
          : Promise.race([
              src().catch(() => null),
              new Promise<null>((r) => {
                timer = setTimeout(() => r(null), QUEUED_TIMEOUT_MS);
              }),
            ]).finally(() => clearTimeout(timer));
      this.queuedCache = { at: now, value };
    }
    return this.queuedCache.value;
  }

  /** This node's status (what /node-status answers). */
  async status(): Promise<NodeStatus> {
    const now = Date.now();
    const byLabel = async (c: Counter<string>, key: (l: Record<string, string | number>) => string) => {
      const out: Record<string, number> = {};
      for (const v of (await c.get()).values) out[key(v.labels as Record<string, string>)] = (out[key(v.labels as Record<string, string>)] ?? 0) + v.value;
      return out;
    };
    const processed: Record<string, number> = {};
    for (const v of (await this.hopProcessing.get()).values) {
      if (v.metricName === 'ramesh_hop_processing_seconds_count') processed[String(v.labels.outcome)] = v.value;
    }
    return {
      v: 1,
      node: this.node,
      role: this.role,
      at: now,
      startedAt: this.startedAt,
      nats: { state: this.nats, reconnects: this.reconnects },
      inFlight: this.sources.inFlight?.() ?? 0,
      queued: await this.queued(),
      links: this.sources.links?.() ?? [],
      wait: Object.fromEntries([...this.waitWindows].map(([k, w]) => [k, w.summary(now)])),
      processing: this.processingWindow.summary(now),
      issuance: this.role === 'edge' ? this.issuanceWindow.summary(now) : null,
      counts: {
        processed,
        rejected: await byLabel(this.envelopesRejected, (l) => String(l.reason)),
        refused: await byLabel(this.requestsRefused, (l) => `${l.layer}/${l.reason}`),
      },
      refusals: [...this.recent].reverse(),
    };
  }

  /** The exposition text (what /metrics answers). */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** Serves GET /metrics (Prometheus) and GET /node-status (JSON) on `listen` (host:port). */
  async serve(listen: string): Promise<{ url: string; close(): Promise<void> }> {
    const [host, port] = splitHostPort(listen);
    const server: Server = createServer((req, res) => {
      const path = (req.url ?? '').split('?')[0];
      const answer = (p: Promise<[string, string]>) =>
        p.then(
          ([type, body]) => res.writeHead(200, { 'content-type': type, 'cache-control': 'no-store' }).end(body),
          (e: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${e.message}\n`),
        );
      if (req.method === 'GET' && path === '/metrics') return void answer(this.text().then((b) => [this.contentType, b]));
      if (req.method === 'GET' && path === '/node-status') return void answer(this.status().then((s) => ['application/json', JSON.stringify(s)]));
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found; try /metrics or /node-status\n');
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    const addr = server.address();
    const url = `http://${urlHost(host)}:${typeof addr === 'object' && addr ? addr.port : port}/metrics`;
    return {
      url,
      close: () =>
        new Promise((r) => {
          server.close(() => r());
          server.closeAllConnections();
        }),
    };
  }
}
