import { headers as natsHeaders, type NatsConnection } from 'nats';
import { parseDuration, type Topology } from '../../shared/config/index.js';
import { connectBus } from '../../shared/bus/connect.js';
import { nodeConnectOptions } from '../../shared/bus/auth.js';
import { downSubject, ENVELOPE_ID_HEADER } from '../../shared/bus/subjects.js';
import { EnvelopeQueue, type Disposition, type MessageInfo } from '../../shared/bus/queue.js';
import {
  KeyRing,
  loadMeshKeyRing,
  loadOrCreateMeshNodeKey,
  ReplayGuard,
  signResult,
  verifyEnvelope,
  wrapEnvelope,
  type NodeKey,
  type ResultPayload,
} from '../../shared/envelope/index.js';
import { toRaError } from '../../shared/errors/index.js';
import { NodeMetrics } from '../../shared/metrics/node-metrics.js';
import { enforceHop, PolicyLayer } from '../../shared/policy/index.js';
import { enforceValidationMethods } from '../../shared/envelope/validation-methods.js';
import { createRelayLogger, type Logger } from './logger.js';

export interface RelayServiceOptions {
  topology: Topology;
  nodeId: string;
  log?: Logger;
  keys?: KeyRing;
}

/**
 * A relay RA: verifies what its children send (the whole chain below it, against the topology),
 * enforces its own policy layer, wraps and countersigns the envelope and forwards it to its parent.
 * A refusal is signed by the relay and sent straight back to the origin edge.
 */
export class RelayService {
  private nc?: NatsConnection;
  private metricsOf?: NodeMetrics;
  private metricsServer?: { url: string; close(): Promise<void> };

  /** This node's Prometheus metrics (also served on the node's `metrics` listener). */
  get metrics(): NodeMetrics {
    return (this.metricsOf ??= new NodeMetrics(this.nodeId, 'relay', { processMetrics: true }));
  }

  /** URL of this node's /metrics listener, when the topology gives it one. */
  get metricsUrl(): string | undefined {
    return this.metricsServer?.url;
  }
  private queue?: EnvelopeQueue;
  private readonly replay: ReplayGuard;
  private readonly layer: PolicyLayer;
  private readonly ttlMs: number;

  private constructor(
    readonly nodeId: string,
    private readonly topology: Topology,
    private readonly key: NodeKey,
    private readonly keys: KeyRing,
    private readonly log: Logger,
  ) {
    this.ttlMs = parseDuration(topology.config.envelope.ttl);
    this.replay = new ReplayGuard({ ttlMs: this.ttlMs * 2, max: 100_000 });
    const node = topology.node(nodeId);
    this.layer = new PolicyLayer(node.id, node.policy);
  }

  static async create(opts: RelayServiceOptions): Promise<RelayService> {
    const node = opts.topology.node(opts.nodeId);
    if (node.role !== 'relay') throw new Error(`node "${opts.nodeId}" is a ${node.role}, not a relay`);
    const key = await loadOrCreateMeshNodeKey(opts.topology, opts.nodeId);
    const keys = opts.keys ?? (await loadMeshKeyRing(opts.topology));
    return new RelayService(opts.nodeId, opts.topology, key, keys, opts.log ?? createRelayLogger(opts.nodeId));
  }

  private get parent(): string {
    return this.topology.node(this.nodeId).parent!;
  }

  async start(): Promise<void> {
    const metricsListen = this.topology.node(this.nodeId).metrics;
    if (metricsListen) this.metricsServer = await this.metrics.serve(metricsListen);
    this.nc = await connectBus(this.topology.natsUrl(this.nodeId), {
      name: this.nodeId,
      log: this.log,
      connection: await nodeConnectOptions(this.topology, this.nodeId),
    });
    this.metrics.watchNats(this.nc);
    const queue = (this.queue = await EnvelopeQueue.open(this.nc, this.topology, this.nodeId, { log: this.log, observer: this.metrics }));
    this.metrics.bind({ inFlight: () => queue.inFlight, queued: () => queue.depth(), links: () => queue.linkStates() });
    this.queue.consume((data, info) => this.onEnvelope(data, info));
    this.log.info({ parent: this.parent, policy: this.layer.label }, 'relay started');
  }

  async stop(): Promise<void> {
    await this.metricsServer?.close();
    await this.queue?.stop();
    if (this.nc && !this.nc.isClosed()) await this.nc.drain().catch(() => undefined);
    this.log.info('relay stopped');
  }

  /** One inbound message: acked once forwarded into this relay's outbound stream (or refused). */
  private async onEnvelope(data: Uint8Array, info: MessageInfo): Promise<Disposition> {
    const recvAt = info.recvAt;
    const jws = new TextDecoder().decode(data);
    let env;
    try {
      env = await verifyEnvelope(jws, { topology: this.topology, verifier: this.nodeId, keys: this.keys, replay: this.replay });
    } catch (e) {
      const err = toRaError(e);
      // Malformed, forged or replayed envelopes are dropped and logged; they never crash the relay.
      // The id is the bus header's claim (the envelope did not verify).
      this.metrics.rejected(err.reason ?? err.type, info.envelopeId);
      this.metrics.hopDone('rejected', recvAt);
      this.log.warn({ envelopeId: info.envelopeId, from: info.from, reason: err.reason ?? err.type, detail: err.detail }, 'envelope rejected and dropped');
      return 'drop';
    }
    const id = env.payload.id;
    const log = this.log.child({ envelopeId: id, origin: env.payload.origin.node });
    log.debug({ from: info.from, waitMs: info.waitMs, redelivery: env.redelivery }, 'envelope received');
    try {
      // Never trust the hop below: this layer is enforced here whatever the edge already checked.
      // Revocations carry no names to judge: the chain was verified above, the policy layer does not apply.
      if (env.payload.kind === 'issue') {
        // Identifiers, the CSR, requested validity, renewal window, then this layer's rate limits (shared/policy/hop.ts).
        await enforceHop(this.layer, env.payload);
        // SCEP validation methods only from edges the topology gives a scep block.
        enforceValidationMethods(this.topology, env.payload);
      }
    } catch (e) {
      const err = toRaError(e);
      log.info({ problem: err.type, detail: err.detail }, 'request refused by this layer');
      const now = Date.now();
      const result: ResultPayload = {
        v: 1,
        id,
        edge: env.payload.origin.node,
        status: 'invalid',
        problem: err.toProblem(),
        hops: env.hops,
        gateway: { node: this.nodeId, recvAt, sentAt: now },
        iat: Math.floor(now / 1000),
      };
      // Core NATS: if this refusal is lost, the edge retransmits and is refused again.
      this.publish(downSubject(env.payload.origin.node), await signResult(result, this.key), id);
      this.metrics.refused(this.nodeId, err.type, id, err.detail);
      this.metrics.hopDone('refused', recvAt);
      return 'ack';
    }
    const wrapped = await wrapEnvelope(jws, { node: this.nodeId, recvAt, policy: this.layer.label, decision: 'allow' }, this.key, { ttlMs: this.ttlMs });
    try {
      // Forwarded under the Nats-Msg-Id it came with: a JetStream redelivery of this copy is a
      // duplicate upstream, an edge's retransmit (a new copy) is not.
      await this.queue!.send(wrapped, id, info.msgId ?? id);
    } catch (e) {
      log.warn({ err: e }, 'could not store the envelope in the outbound stream; will retry');
      this.metrics.hopDone('retry', recvAt);
      return 'retry';
    }
    log.debug({ parent: this.parent, redelivery: env.redelivery }, 'envelope forwarded');
    this.metrics.hopDone('forwarded', recvAt);
    return 'ack';
  }

  private publish(subject: string, jws: string, id: string): void {
    if (!this.nc || this.nc.isClosed()) return;
    const h = natsHeaders();
    h.set(ENVELOPE_ID_HEADER, id);
    this.nc.publish(subject, new TextEncoder().encode(jws), { headers: h });
  }
}
