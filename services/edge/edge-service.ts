import { hostname } from 'node:os';
import type { FastifyInstance } from 'fastify';
import { type NatsConnection, type Subscription } from 'nats';
import { parseDuration, splitHostPort, urlHost, type Topology } from '../../shared/config/index.js';
import { connectBus } from '../../shared/bus/connect.js';
import { nodeConnectOptions } from '../../shared/bus/auth.js';
import { downSubject, ENVELOPE_ID_HEADER } from '../../shared/bus/subjects.js';
import { EnvelopeQueue } from '../../shared/bus/queue.js';
import {
  KeyRing,
  loadMeshKeyRing,
  loadOrCreateMeshNodeKey,
  clockSkewMs,
  newEdgePayload,
  signEdgeEnvelope,
  verifyResult,
  verifyCrlMessage,
  peekTyp,
  CRL_TYP,
  type CrlMessage,
  type EdgePayload,
  type EnvelopeIdentifier,
  type NodeKey,
  type ResultPayload,
} from '../../shared/envelope/index.js';
import { RaError } from '../../shared/errors/index.js';
import { NodeMetrics } from '../../shared/metrics/node-metrics.js';
import { accountLifetimeOf, noteUpstreamRefusal, PolicyLayer } from '../../shared/policy/index.js';
import { KeyedLock, NodeStore } from '../../shared/store/index.js';
import { createEdgeLogger, type Logger } from './logger.js';
import { ACME_PATHS, type AcmeContext } from './acme/context.js';
import { NonceStore } from './acme/nonce.js';
import { leafDer, leafSerial } from '../../shared/pki/index.js';
import { AcmeStore, type CertificateRecord, type OrderRecord, type OutboxRecord } from './acme/records.js';
import { DueIndex } from './due-index.js';
import { EdgeRevocations } from './revocations.js';
import { buildAcmeServer } from './acme/server.js';
import { pruneExpired } from './acme/prune.js';
import { loadOrCreateEdgeTls } from './tls.js';
import { EabStore } from './eab/eab-store.js';
import { startAdminServer } from './admin.js';
import { EdgeScep } from './scep/scep-service.js';
import { SegmentResolver } from './validation/resolver.js';
import { http01Validator } from './validation/http-01.js';
import { dns01Validator } from './validation/dns-01.js';
import { tlsAlpn01Validator } from './validation/tls-alpn-01.js';
import type { Validators } from './validation/validators.js';

const PRUNE_INTERVAL_MS = 10 * 60_000;

export interface EdgeServiceOptions {
  topology: Topology;
  nodeId: string;
  log?: Logger;
  /** Public keys of the mesh (default: read from the topology's keys folder). */
  keys?: KeyRing;
  /** First retransmission of an unanswered envelope (default 3 s), doubling up to 60 s. */
  retransmitMs?: number;
}

/**
 * An edge RA: serves ACME inside its segment, validates challenges locally, and publishes signed CSR
 * envelopes to its parent. Accepted requests wait in the store's outbox until their result arrives,
 * and are retransmitted (same envelope id, so upstream never acts twice) while it does not.
 */
export class EdgeService {
  private nc?: NatsConnection;
  private metricsOf?: NodeMetrics;
  private metricsServer?: { url: string; close(): Promise<void> };

  /** This node's Prometheus metrics (also served on the node's `metrics` listener). */
  get metrics(): NodeMetrics {
    return (this.metricsOf ??= new NodeMetrics(this.nodeId, 'edge', { processMetrics: true }));
  }

  /** URL of this node's /metrics listener, when the topology gives it one. */
  get metricsUrl(): string | undefined {
    return this.metricsServer?.url;
  }
  private sub?: Subscription;
  private queue?: EnvelopeQueue;
  private timer?: NodeJS.Timeout;
  private sweeping = false;
  private lastPruneAt = 0;
  private app?: FastifyInstance;
  private admin?: FastifyInstance;
  private listening?: string;
  /**
   * When each outbox envelope next needs the sweep: its retransmit, or the end of its order's life.
   * Its size is the number of envelopes awaiting their result (the in-flight gauge).
   */
  private readonly due: DueIndex<OutboxRecord>;
  /** Finalize requests holding their answer for an order's result (acme.finalizeWait), by order id. */
  private readonly orderWaiters = new Map<string, Set<() => void>>();
  private stopping = false;

  private constructor(
    readonly nodeId: string,
    private readonly topology: Topology,
    private readonly store: AcmeStore,
    private readonly key: NodeKey,
    private readonly keys: KeyRing,
    private readonly ctx: AcmeContext,
    private readonly tls: { cert: string; key: string; certFile: string },
    private readonly log: Logger,
    private readonly retransmitMs: number,
  ) {
    const lastChance = parseDuration(ctx.acme.orderLifetime) + clockSkewMs(topology);
    this.due = new DueIndex<OutboxRecord>((out) => Math.min(out.nextAt, out.createdAt + lastChance + 1));
    this.revocations = new EdgeRevocations(nodeId, topology, store, key, ctx.locks, log, (id, jws, attempt) => this.publishUp(id, jws, attempt), retransmitMs);
    const scep = topology.node(nodeId).scep;
    this.scep = scep
      ? new EdgeScep({
          nodeId,
          topology,
          config: scep,
          acme: store,
          key,
          locks: ctx.locks,
          log: log.child({ protocol: 'scep' }),
          layers: ctx.layers,
          publish: (id, jws, attempt) => this.publishUp(id, jws, attempt),
          findCertificate: (der) => this.revocations.findByDer(der),
          revokeLate: async (certificate, jwkThumbprint) => {
            await this.revocations.enqueue({ certificate, reason: 5, requester: { method: 'issuer-account', account: certificate.accountId, jwkThumbprint } });
          },
          metrics: this.metrics,
          retransmitMs,
        })
      : undefined;
  }

  private readonly revocations: EdgeRevocations;
  /** SCEP enrollment (RFC 8894, services/edge/scep/), when the topology gives this edge a scep block. */
  readonly scep: EdgeScep | undefined;

  static async create(opts: EdgeServiceOptions): Promise<EdgeService> {
    const { topology, nodeId } = opts;
    const node = topology.node(nodeId);
    if (node.role !== 'edge') throw new Error(`node "${nodeId}" is a ${node.role}, not an edge`);
    const acme = topology.acme(nodeId);
    const log = opts.log ?? createEdgeLogger(nodeId);
    const db = await NodeStore.open(topology.storeDir(nodeId));
    const store = new AcmeStore(db);
    const eab = new EabStore(db);
    const key = await loadOrCreateMeshNodeKey(topology, nodeId);
    const keys = opts.keys ?? (await loadMeshKeyRing(topology));
    const [host, port] = splitHostPort(acme.listen);
    const baseUrl = (acme.externalUrl ?? `https://${host === '0.0.0.0' || host === '::' ? hostname() : urlHost(host)}:${port}`).replace(/\/$/, '');
    const tlsNames = [new URL(baseUrl).hostname.replace(/^\[|\]$/g, ''), 'localhost', '127.0.0.1', '::1'];
    const tls = acme.tls
      ? await (async () => {
          const { readFile } = await import('node:fs/promises');
          return { cert: await readFile(topology.resolvePath(acme.tls!.cert), 'utf8'), key: await readFile(topology.resolvePath(acme.tls!.key), 'utf8'), certFile: topology.resolvePath(acme.tls!.cert) };
        })()
      : await loadOrCreateEdgeTls(topology.storeDir(nodeId), tlsNames);
    const resolver = new SegmentResolver({
      ...(acme.hosts ? { hosts: acme.hosts } : {}),
      ...(acme.resolver ? { server: acme.resolver } : {}),
      forbidden: acme.forbiddenAddresses,
    });
    const validators: Validators = {
      'http-01': http01Validator(resolver, { port: acme.http01Port }),
      'dns-01': dns01Validator(resolver),
      'tls-alpn-01': tlsAlpn01Validator(resolver, acme.tlsAlpn01Port),
    };
    let self: EdgeService | undefined;
    const ctx: AcmeContext = {
      nodeId,
      topology,
      acme,
      baseUrl,
      paths: ACME_PATHS,
      store,
      eab,
      nonces: new NonceStore({ db, nonces: store.nonces }, undefined, undefined, log),
      locks: new KeyedLock(),
      log,
      layers: topology.layersFor(nodeId).map((n) => new PolicyLayer(n.id, n.policy)),
      validators,
      challengeTypes: acme.challenges,
      submit: (order, csrDer) => self!.submit(order, csrDer),
      revoke: (req) => self!.revocations.request(req, parseDuration(acme.revokeWait)),
      findCertificate: (der) => self!.revocations.findByDer(der),
      awaitOrder: (orderId, ms) => self!.awaitOrder(orderId, ms),
    };
    self = new EdgeService(nodeId, topology, store, key, keys, ctx, tls, log, opts.retransmitMs ?? 3000);
    return self;
  }

  /** The ACME directory URL clients are given. */
  get directoryUrl(): string {
    return this.ctx.baseUrl + ACME_PATHS.directory;
  }

  /** The file holding the certificate the ACME listener serves (trust it in clients). */
  get tlsCertFile(): string {
    return this.tls.certFile;
  }

  get tlsCertPem(): string {
    return this.tls.cert;
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
    this.sub = this.nc.subscribe(downSubject(this.nodeId), {
      callback: (err, msg) => {
        if (err) return this.log.error({ err }, 'down subscription error');
        // Down: results (ra-mesh-result+jws) and the gateway's CRL (ra-mesh-crl+jws), told apart by typ.
        const text = new TextDecoder().decode(msg.data);
        const envelopeId = msg.headers?.get(ENVELOPE_ID_HEADER) || undefined;
        const handled = peekTyp(text) === CRL_TYP ? this.onCrl(text) : this.onResult(msg.data, envelopeId);
        handled.catch((e) => this.log.error({ err: e, envelopeId }, 'down message handling failed'));
      },
    });
    await this.nc.flush();
    const queue = (this.queue = await EnvelopeQueue.open(this.nc, this.topology, this.nodeId, { log: this.log }));
    this.metrics.bind({ inFlight: () => this.due.size, queued: () => queue.depth() });
    this.app = buildAcmeServer(this.ctx, this.tls, this.metrics);
    const [host, port] = splitHostPort(this.ctx.acme.listen);
    this.listening = await this.app.listen({ host, port });
    this.admin = await startAdminServer(this.ctx.eab, this.topology.storeDir(this.nodeId), this.log, this.scep?.store);
    await this.scep?.start();
    await this.due.load(this.store.outbox.entries());
    await this.revocations.load();
    this.timer = setInterval(() => void this.sweep(), Math.min(1000, this.retransmitMs));
    this.timer.unref();
    this.log.info({ directory: this.directoryUrl, listen: this.listening, tlsCert: this.tls.certFile, parent: this.parent }, 'edge started');
  }

  /** See AcmeContext.awaitOrder. */
  private awaitOrder(orderId: string, ms: number): Promise<void> {
    if (this.stopping || ms <= 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      let set = this.orderWaiters.get(orderId);
      if (!set) this.orderWaiters.set(orderId, (set = new Set()));
      const done = (): void => {
        clearTimeout(timer);
        set!.delete(done);
        if (set!.size === 0 && this.orderWaiters.get(orderId) === set) this.orderWaiters.delete(orderId);
        resolve();
      };
      const timer = setTimeout(done, ms);
      set.add(done);
      // A result applied just before this waiter was added: the order is no longer processing.
      void this.store.orders.get(orderId).then(
        (o) => o?.status !== 'processing' && done(),
        () => done(),
      );
    });
  }

  private orderSettled(orderId: string): void {
    for (const done of [...(this.orderWaiters.get(orderId) ?? [])]) done();
  }

  async stop(): Promise<void> {
    // Held finalize answers go out now (the order as it stands), so closing the listener does not wait for them.
    this.stopping = true;
    for (const id of [...this.orderWaiters.keys()]) this.orderSettled(id);
    await this.metricsServer?.close();
    if (this.timer) clearInterval(this.timer);
    await this.app?.close();
    await this.admin?.close();
    await this.scep?.stop();
    this.sub?.unsubscribe();
    if (this.nc && !this.nc.isClosed()) await this.nc.drain().catch(() => undefined);
    // A sweep may be mid-flight; wait for it before closing the store.
    for (let i = 0; i < 100 && this.sweeping; i++) await new Promise((r) => setTimeout(r, 20));
    await this.ctx.nonces.flush();
    await this.store.db.close();
    this.log.info('edge stopped');
  }

  /** Every entry of the edge store as JSON text by raw key (diagnostics; tests check that refusals change nothing). */
  async storeSnapshot(): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    for await (const [k, v] of this.store.db.dump()) out.set(k, JSON.stringify(v));
    return out;
  }

  private get parent(): string {
    return this.topology.node(this.nodeId).parent!;
  }

  /** Finalize: sign the envelope and put it in the outbox together with the order's new state (one batch). */
  private async submit(order: OrderRecord, csrDer: Uint8Array): Promise<void> {
    const node = this.topology.node(this.nodeId);
    const now = Date.now();
    const lifetime = parseDuration(this.ctx.acme.orderLifetime);
    const identifiers = await this.validationRecords(order);
    const acct = (await this.store.accounts.get(order.accountId))!;
    // The account layer's lifetime rules travel up: the gateway resolves the lifetime from every layer.
    const accountLifetime = accountLifetimeOf((await this.ctx.eab.policyLayer(acct.eabKeyId))?.policy);
    const payload = newEdgePayload({
      origin: { node: this.nodeId, dc: node.dc, ...(node.segment ? { segment: node.segment } : {}) },
      csr: Buffer.from(csrDer).toString('base64url'),
      identifiers,
      account: { id: acct.id, eab: acct.eabKeyId, jwkThumbprint: acct.thumbprint, ...(accountLifetime ? { lifetime: accountLifetime } : {}) },
      requested: { notBefore: order.notBefore ?? null, notAfter: order.notAfter ?? null },
      renewalOf: await this.renewalOf(order),
      ttlMs: Math.min(parseDuration(this.topology.config.envelope.ttl), lifetime),
      now,
    });
    const jws = await signEdgeEnvelope(payload, this.key);
    order.envelopeId = payload.id;
    // RFC 8555 §7.1.3: expires is when the server considers the order invalid; a processing order ends
    // acme.orderLifetime after finalize if no answer came (the outbox sweep below).
    order.expires = new Date(now + lifetime).toISOString();
    const out: OutboxRecord = { envelopeId: payload.id, orderId: order.id, jws, attempts: 1, nextAt: now + this.retransmitMs, createdAt: now };
    // RFC 9773 §5: once this order is finalized, the certificate it replaces is marked replaced.
    const replaced = order.replaces ? await this.store.certificates.get(order.replaces.certificateId) : undefined;
    if (replaced) replaced.replacedBy = order.id;
    await this.store.db.batch([
      ...(replaced ? [{ coll: this.store.certificates as never, type: 'put' as const, key: replaced.id, value: replaced }] : []),
      { coll: this.store.orders as never, type: 'put', key: order.id, value: order },
      { coll: this.store.outbox as never, type: 'put', key: payload.id, value: out },
      { coll: this.store.orderByEnvelope as never, type: 'put', key: payload.id, value: order.id },
    ]);
    this.due.note(payload.id, out);
    this.log.info({ envelopeId: payload.id, order: order.id, parent: this.parent }, 'envelope queued');
    this.publish(out);
  }

  /** The renewed certificate (base64url DER of its leaf) when the order is a renewal with the old key. */
  private async renewalOf(order: OrderRecord): Promise<string | null> {
    if (!order.replaces?.renewal) return null;
    const old = await this.store.certificates.get(order.replaces.certificateId);
    if (!old) throw new RaError('serverInternal', { detail: 'the certificate this order renews is no longer in the edge store' });
    return Buffer.from(leafDer(old.chainPem)).toString('base64url');
  }

  private async validationRecords(order: OrderRecord): Promise<EnvelopeIdentifier[]> {
    const out: EnvelopeIdentifier[] = [];
    for (const [i, authzId] of order.authzIds.entries()) {
      const authz = (await this.store.authzs.get(authzId))!;
      const chs = await Promise.all(authz.challengeIds.map((c) => this.store.challenges.get(c)));
      const valid = chs.find((c) => c?.status === 'valid');
      const ident = order.identifiers[i]!;
      const validation = authz.renewal
        ? { method: 'renewal' as const, at: authz.renewal.at, from: `serial:${authz.renewal.serial}` }
        : valid
          ? { method: valid.type, at: valid.validated!, ...(valid.validationFrom ? { from: valid.validationFrom } : {}) }
          : undefined;
      out.push({ type: ident.type as 'dns' | 'ip', value: ident.value, ...(validation ? { validation } : {}) });
    }
    return out;
  }

  /**
   * Into this edge's outbound stream on its own (segment-local) NATS server; from there the servers
   * carry it up whenever the uplink is there. A failed store is retried by the outbox sweep.
   */
  private publish(out: OutboxRecord): void {
    this.publishUp(out.envelopeId, out.jws, out.attempts);
  }

  /** `attempt` 1 is the first copy; later attempts are the sweep's retransmits (EnvelopeQueue.resend). */
  private publishUp(envelopeId: string, jws: string, attempt = 1): void {
    const queue = this.queue;
    if (!queue || !this.nc || this.nc.isClosed()) return;
    const sent = attempt <= 1 ? queue.send(jws, envelopeId).then(({ duplicate }) => (duplicate ? 'duplicate' : 'stored')) : queue.resend(jws, envelopeId, attempt);
    sent.then(
      (how) => this.log.debug({ envelopeId, attempt, how }, 'envelope stored in the outbound stream'),
      (e) => this.log.warn({ err: e, envelopeId }, 'outbound stream did not store the envelope; the outbox retries'),
    );
  }

  /** A CRL message from the gateway: verified, kept when newer than the one stored (served at GET /crl). */
  private async onCrl(jws: string): Promise<void> {
    let msg: CrlMessage;
    try {
      msg = await verifyCrlMessage(jws, { topology: this.topology, keys: this.keys });
    } catch (e) {
      this.log.warn({ err: e instanceof RaError ? { type: e.type, detail: e.detail, reason: e.reason } : e }, 'CRL message rejected and dropped');
      return;
    }
    await this.ctx.locks.run('crl', async () => {
      const current = await this.store.crl.get('current');
      if (current && current.number >= msg.number) return;
      await this.store.crl.put('current', { number: msg.number, thisUpdate: msg.thisUpdate, nextUpdate: msg.nextUpdate, der: msg.crl, receivedAt: new Date().toISOString() });
      this.log.info({ number: msg.number }, 'CRL updated');
    });
  }

  /** Retransmits unanswered envelopes and expires orders whose result never came. */
  private async sweep(): Promise<void> {
    if (this.sweeping) return;
    this.sweeping = true;
    try {
      const now = Date.now();
      const lifetime = parseDuration(this.ctx.acme.orderLifetime);
      const skew = clockSkewMs(this.topology);
      for await (const [id, out] of this.due.due(now, (id) => this.store.outbox.get(id))) {
        const deadline = out.createdAt + lifetime;
        // The envelope is never signed to live past the order's deadline, and nodes accept it at most
        // clockSkew after its exp: from then on no copy anywhere can still be issued for.
        if (now > deadline + skew) {
          await this.ctx.locks.run(`order:${out.orderId}`, async () => {
            const order = await this.store.orders.get(out.orderId);
            if (order && order.status === 'processing') {
              order.status = 'invalid';
              order.error = new RaError('serverInternal', {
                detail: `no answer from the CA within ${this.ctx.acme.orderLifetime} (acme.orderLifetime) after finalize: the order expired and nothing was issued; start a new order`,
              }).toProblem();
              await this.store.orders.put(order.id, order);
            }
            await this.store.outbox.del(id);
          });
          this.due.drop(id);
          this.log.warn({ envelopeId: id, order: out.orderId }, 'order expired waiting for the mesh');
          continue;
        }
        if (out.nextAt > now) {
          this.due.note(id, out);
          continue;
        }
        out.attempts += 1;
        // The outbound stream holds the envelope durably; this resend is the end-to-end safety net (a
        // result lost on its way down, an envelope expired during a long outage), so it backs off to
        // once per envelope lifetime.
        const ttlMs = parseDuration(this.topology.config.envelope.ttl);
        out.nextAt = now + Math.min(Math.max(60_000, ttlMs), this.retransmitMs * 2 ** Math.min(out.attempts - 1, 10));
        // An envelope is valid for envelope.ttl; a request still unanswered near then is re-signed with
        // the same id and content (fresh iat/exp/nonce), which upstream treats as a redelivery.
        out.jws = await this.refreshed(out.jws, now, deadline);
        await this.store.outbox.put(id, out);
        this.due.note(id, out);
        this.log.info({ envelopeId: id, attempt: out.attempts }, 'retransmitting envelope');
        this.publish(out);
      }
      await this.revocations.sweep(now, parseDuration(this.ctx.acme.orderLifetime));
      await this.scep?.sweep(now);
      await this.pruneIfDue(now);
    } catch (e) {
      this.log.error({ err: e }, 'outbox sweep failed');
    } finally {
      this.sweeping = false;
    }
  }

  /**
   * A certificate that arrives for an order this edge already gave up on (the CA answered after the
   * order's deadline): the client was told nothing was issued, so the certificate is revoked
   * (cessationOfOperation) through the mesh instead of being left valid and undelivered.
   */
  private async revokeLate(order: OrderRecord, chainPem: string, log: Logger): Promise<void> {
    const serial = leafSerial(chainPem);
    if (await this.store.certBySerial.get(serial)) return log.debug('late certificate already handled');
    const acct = await this.store.accounts.get(order.accountId);
    const cert: CertificateRecord = {
      id: `late-${order.id}`,
      orderId: order.id,
      accountId: order.accountId,
      chainPem,
      issuedAt: new Date().toISOString(),
      serial,
      identifiers: order.identifiers,
    };
    await this.store.db.batch([
      { coll: this.store.certificates as never, type: 'put', key: cert.id, value: cert },
      { coll: this.store.certBySerial as never, type: 'put', key: serial, value: cert.id },
    ]);
    log.warn({ order: order.id, serial }, 'certificate arrived after its order expired: revoking it');
    await this.revocations.enqueue({
      certificate: cert,
      reason: 5,
      requester: { method: 'issuer-account', account: order.accountId, jwkThumbprint: acct?.thumbprint ?? 'unknown' },
    });
  }

  /** Removes orders expired longer than acme.retention ago; runs at most every 10 minutes (or retention). */
  private async pruneIfDue(now: number): Promise<void> {
    const retentionMs = parseDuration(this.ctx.acme.retention);
    if (now - this.lastPruneAt < Math.min(PRUNE_INTERVAL_MS, retentionMs)) return;
    this.lastPruneAt = now;
    const removed = await pruneExpired(this.store, now, retentionMs);
    if (removed > 0) this.log.info({ removed }, 'pruned expired orders');
    const nonces = await this.ctx.nonces.prune(now);
    if (nonces > 0) this.log.debug({ removed: nonces }, 'pruned expired nonces');
  }

  /** The envelope re-signed (same id and content) when it nears exp, never to live past the order's deadline. */
  private async refreshed(jws: string, now: number, deadline: number): Promise<string> {
    const payload = JSON.parse(Buffer.from(jws.split('.')[1]!, 'base64url').toString('utf8')) as EdgePayload;
    const ttlMs = Math.min(parseDuration(this.topology.config.envelope.ttl), deadline - now);
    if (payload.exp * 1000 - now > Math.min(ttlMs / 2, 60_000) || ttlMs < 2000) return jws;
    const fresh = newEdgePayload({ ...payload, id: payload.id, ttlMs, now });
    return signEdgeEnvelope(fresh, this.key);
  }

  private async onResult(data: Uint8Array, claimedId?: string): Promise<void> {
    let result: ResultPayload;
    try {
      result = await verifyResult(new TextDecoder().decode(data), { topology: this.topology, edge: this.nodeId, keys: this.keys });
    } catch (e) {
      // The id is the bus header's claim (the result did not verify).
      this.metrics.rejected((e instanceof RaError ? e.reason : undefined) ?? 'error', claimedId);
      this.log.warn({ envelopeId: claimedId, err: e instanceof RaError ? { type: e.type, detail: e.detail, reason: e.reason } : e }, 'result rejected and dropped');
      return;
    }
    // Answered: a later retransmit of this id, if any, is a new copy (EnvelopeQueue.resend).
    this.queue?.forget(result.id);
    if (result.kind === 'revoke') return this.revocations.onResult(result);
    this.metrics.resultsReceived.inc({ status: result.status, by: result.gateway.node });
    if (this.scep && (await this.scep.onResult(result))) return;
    const log = this.log.child({ envelopeId: result.id });
    const orderId = await this.store.orderByEnvelope.get(result.id);
    if (!orderId) return log.warn('result for an unknown envelope dropped');
    try {
      await this.applyResult(orderId, result, log);
    } finally {
      this.orderSettled(orderId);
    }
  }

  private async applyResult(orderId: string, result: ResultPayload, log: Logger): Promise<void> {
    await this.ctx.locks.run(`order:${orderId}`, async () => {
      const order = await this.store.orders.get(orderId);
      if (order && order.status === 'invalid' && order.envelopeId === result.id && result.status === 'valid' && result.certificate) {
        return this.revokeLate(order, result.certificate, log);
      }
      if (!order || order.status !== 'processing' || order.envelopeId !== result.id) {
        await this.store.outbox.del(result.id);
        this.due.drop(result.id);
        return log.debug('duplicate result ignored');
      }
      if (result.status === 'valid' && result.certificate) {
        const certId = order.id;
        order.status = 'valid';
        order.certificateId = certId;
        let serial: string | undefined;
        try {
          serial = leafSerial(result.certificate);
        } catch (e) {
          log.warn({ err: e }, 'certificate serial unreadable: it cannot be revoked through this edge');
        }
        const cert: CertificateRecord = {
          id: certId,
          orderId: order.id,
          accountId: order.accountId,
          chainPem: result.certificate,
          issuedAt: new Date().toISOString(),
          ...(serial ? { serial } : {}),
          identifiers: order.identifiers,
        };
        await this.store.db.batch([
          { coll: this.store.certificates as never, type: 'put', key: certId, value: cert },
          ...(serial ? [{ coll: this.store.certBySerial as never, type: 'put' as const, key: serial, value: certId }] : []),
          { coll: this.store.orders as never, type: 'put', key: order.id, value: order },
          { coll: this.store.outbox as never, type: 'del', key: result.id },
        ]);
        this.due.drop(result.id);
        const total = Date.now() - Date.parse(order.finalizedAt ?? order.createdAt);
        this.metrics.issuance('valid', Number.isFinite(total) ? total : undefined);
        log.info({ order: order.id, hops: result.hops.map((h) => ({ node: h.node, ms: h.sentAt - h.recvAt })), totalMs: total }, 'certificate received');
      } else {
        order.status = 'invalid';
        order.error = result.problem ?? new RaError('serverInternal', { detail: 'the mesh refused the request' }).toProblem();
        // An upstream layer's rate limit: newOrder refuses this account/identifiers/edge early until it refills.
        noteUpstreamRefusal({ path: this.ctx.layers }, { account: order.accountId, identifiers: order.identifiers, edge: this.nodeId }, result.problem);
        await this.store.db.batch([
          { coll: this.store.orders as never, type: 'put', key: order.id, value: order },
          { coll: this.store.outbox as never, type: 'del', key: result.id },
        ]);
        this.due.drop(result.id);
        const total = Date.now() - Date.parse(order.finalizedAt ?? order.createdAt);
        this.metrics.issuance('invalid', Number.isFinite(total) ? total : undefined);
        log.info({ order: order.id, problem: order.error.type, detail: order.error.detail, by: result.gateway.node, totalMs: total }, 'request refused upstream');
      }
    });
  }
}
