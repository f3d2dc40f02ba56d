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
  verifyMessage,
  type NodeKey,
  type ResultPayload,
  type VerifiedEnvelope,
  type VerifiedMessage,
} from '../../shared/envelope/index.js';
import { toRaError, type RaError } from '../../shared/errors/index.js';
import { Bundler } from './bundler.js';
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
 * The largest bundle this relay makes: every relay above wraps it again in a bundle layer, whose
 * base64url payload is 4/3 of what it holds plus its own members, and what reaches the gateway must
 * stay within envelope.bundle.maxBytes.
 */
export function bundleBytesAt(topology: Topology, nodeId: string): number {
  let above = 0;
  for (let n = topology.node(topology.node(nodeId).parent!); n.role === 'relay'; n = topology.node(n.parent!)) above++;
  return Math.floor(topology.config.envelope.bundle.maxBytes * 0.75 ** above) - 2048 * above;
}

/**
 * A relay RA: verifies what its children send (the whole chain below it, against the topology),
 * enforces its own policy layer on every request, countersigns and forwards to its parent: alone, or
 * under load with what else is ready in one bundle (bundler.ts). A refusal is signed by the relay and
 * sent straight back to the origin edge; a bundle goes on with the refused requests excluded.
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
  private bundler?: Bundler;
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

  /** True when this mesh bundles (envelope.bundle.maxEnvelopes above 1). */
  private get bundles(): boolean {
    return this.topology.config.envelope.bundle.maxEnvelopes > 1;
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
    const { bundle } = this.topology.config.envelope;
    this.bundler = new Bundler({
      key: this.key,
      policy: this.layer.label,
      ttlMs: this.ttlMs,
      maxEnvelopes: bundle.maxEnvelopes,
      maxBytes: bundleBytesAt(this.topology, this.nodeId),
      send: (jws, envelopeId, msgId) => queue.send(jws, envelopeId, msgId),
      sendBundle: (jws, msgId, copies) => queue.sendBundle(jws, msgId, copies),
      sent: (requests) => this.metrics.sentUp(requests),
    });
    this.queue.consume((data, info) => this.onEnvelope(data, info));
    this.log.info({ parent: this.parent, policy: this.layer.label }, 'relay started');
  }

  async stop(): Promise<void> {
    await this.metricsServer?.close();
    await this.queue?.stop();
    if (this.nc && !this.nc.isClosed()) await this.nc.drain().catch(() => undefined);
    this.log.info('relay stopped');
  }

  /**
   * One inbound message (a lone envelope or a child's bundle): acked once what it carries is refused
   * or forwarded into this relay's outbound stream.
   */
  private async onEnvelope(data: Uint8Array, info: MessageInfo): Promise<Disposition> {
    const recvAt = info.recvAt;
    const jws = new TextDecoder().decode(data);
    let msg: VerifiedMessage;
    try {
      msg = await verifyMessage(jws, { topology: this.topology, verifier: this.nodeId, keys: this.keys, replay: this.replay });
    } catch (e) {
      // Malformed, forged or replayed envelopes are dropped and logged; they never crash the relay.
      // The id is the bus header's claim (the envelope did not verify).
      this.reject(toRaError(e), info, recvAt, info.envelopeId);
      return 'drop';
    }
    // A request of a bundle that does not verify is left out here; it is named upstream when its id is known.
    const exclude: string[] = [];
    for (const r of msg.rejected) {
      this.reject(r.error, info, recvAt, r.id);
      if (r.id) exclude.push(r.id);
    }
    const refused = await Promise.all(msg.envelopes.map((env) => this.judge(env, info, recvAt)));
    msg.envelopes.forEach((env, i) => refused[i] && exclude.push(env.payload.id));
    const forwarded = msg.envelopes.filter((_, i) => !refused[i]);
    if (forwarded.length === 0) return msg.envelopes.length > 0 || msg.excluded.length > 0 ? 'ack' : 'drop';
    const id = msg.bundled ? (info.envelopeId ?? forwarded[0]!.payload.id) : forwarded[0]!.payload.id;
    const msgId = info.msgId ?? id;
    const ids = forwarded.map((e) => e.payload.id);
    try {
      // With bundles on, a redelivery of a message already forwarded (its ack was lost) is not sent
      // again: a new bundle around it would not be a duplicate upstream. (Off, its Nats-Msg-Id is.)
      const stored = this.bundles && info.redelivered && (await this.queue!.holds(ids.map((i) => ({ id: i, msgId }))));
      if (!stored) await this.bundler!.forward({
        jws,
        id,
        msgId,
        recvAt,
        ids,
        exclude,
        requests: msg.envelopes.length + msg.rejected.length + msg.excluded.length,
        bundled: msg.bundled,
      });
    } catch (e) {
      this.log.warn({ err: e, envelopeId: id }, 'could not store the envelope in the outbound stream; will retry');
      for (const _ of forwarded) this.metrics.hopDone('retry', recvAt);
      return 'retry';
    }
    for (const env of forwarded) {
      this.log.debug({ envelopeId: env.payload.id, parent: this.parent, redelivery: env.redelivery, bundled: msg.bundled }, 'envelope forwarded');
      this.metrics.hopDone('forwarded', recvAt);
    }
    return 'ack';
  }

  private reject(err: RaError, info: MessageInfo, recvAt: number, envelopeId: string | undefined): void {
    this.metrics.envelopeRejected(err.reason ?? err.type, recvAt, envelopeId);
    this.log.warn({ envelopeId, from: info.from, reason: err.reason ?? err.type, detail: err.detail }, 'envelope rejected and dropped');
  }

  /** This relay's policy layer on one request; a refusal is signed here and sent to the edge. True when refused. */
  private async judge(env: VerifiedEnvelope, info: MessageInfo, recvAt: number): Promise<boolean> {
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
      return false;
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
      return true;
    }
  }

  private publish(subject: string, jws: string, id: string): void {
    if (!this.nc || this.nc.isClosed()) return;
    const h = natsHeaders();
    h.set(ENVELOPE_ID_HEADER, id);
    this.nc.publish(subject, new TextEncoder().encode(jws), { headers: h });
  }
}
