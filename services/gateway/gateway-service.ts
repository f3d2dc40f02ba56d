import { createHash } from 'node:crypto';
import Fastify, { type FastifyInstance } from 'fastify';
import { headers as natsHeaders, type NatsConnection } from 'nats';
import { casSchema, parseDuration, splitHostPort, urlHost, type Topology } from '../../shared/config/index.js';
import { connectBus } from '../../shared/bus/connect.js';
import { nodeConnectOptions } from '../../shared/bus/auth.js';
import { downSubject, ENVELOPE_ID_HEADER } from '../../shared/bus/subjects.js';
import { EnvelopeQueue, type Disposition, type MessageInfo } from '../../shared/bus/queue.js';
import {
  KeyRing,
  loadMeshKeyRing,
  loadOrCreateMeshNodeKey,
  ReplayGuard,
  signCrlMessage,
  signResult,
  verifyMessage,
  type EdgePayload,
  type NodeKey,
  type ResultPayload,
  type RevokePayload,
  type VerifiedEnvelope,
  type VerifiedMessage,
} from '../../shared/envelope/index.js';
import { RaError, toRaError } from '../../shared/errors/index.js';
import { NodeMetrics } from '../../shared/metrics/node-metrics.js';
import { csrNames, fingerprint, leafDer, parseCsr, pemToDer, type CertificateFacts } from '../../shared/pki/index.js';
import { accountLifetimeLayer, enforceHop, PolicyLayer, resolveValidity } from '../../shared/policy/index.js';
import { enforceValidationMethods } from '../../shared/envelope/validation-methods.js';
import { KeyedLock, NodeStore, Semaphore, type Collection } from '../../shared/store/index.js';
import { createCas } from './cas/create-cas.js';
import { isFinalCasError } from './cas/cas-http.js';
import { hasCrl, type CertificateAuthorityService } from './cas/cas.js';
import { createGatewayLogger, type Logger } from './logger.js';
import { faultPoint } from '../../shared/faults/fault-point.js';
import { AuditLog, auditDir } from '../../shared/audit/audit-log.js';
import { StatusCollector } from './status/mesh-status.js';
import { statusPageHtml } from './status/status-page.js';

export interface GatewayServiceOptions {
  topology: Topology;
  nodeId?: string;
  log?: Logger;
  keys?: KeyRing;
  cas?: CertificateAuthorityService;
}

/** What the gateway remembers of every envelope it answered: the idempotency record. */
interface ResultRecord {
  id: string;
  digest: string;
  edge: string;
  status: 'valid' | 'invalid';
  jws: string;
  serial?: string;
  at: number;
}

/** Every certificate the gateway had issued, keyed by serial: who asked, so only that edge may revoke it. */
interface IssuanceRecord {
  serial: string;
  /** The edge that requested the certificate (origin.node of the issue envelope). */
  edge: string;
  envelopeId: string;
  accountId: string;
  identifiers: Array<{ type: string; value: string }>;
  at: number;
  /** SHA-256 (base64url) of the leaf DER: a renewal must present exactly this certificate. */
  leafDigest?: string;
  /** Set when the gateway revoked it: a revoked certificate is never renewed by its key. */
  revokedAt?: string;
}

/** Errors that came out of the CA service itself (for ramesh_requests_refused_total{layer="cas"}). */
const casFailures = new WeakSet<object>();

/** How often the current CRL is published down to every edge (also at start and after each revocation). */
const CRL_PUBLISH_INTERVAL_MS = 10 * 60_000;
/** Requests of one bundle handled at once. */
const BUNDLE_PARALLEL = 8;

/**
 * The root gateway: verifies the whole envelope chain against the topology, applies the final policy
 * layer, calls the CA service once per envelope id, and routes the signed result to the origin edge.
 */
export class GatewayService {
  private nc?: NatsConnection;
  private metricsOf?: NodeMetrics;
  private metricsServer?: { url: string; close(): Promise<void> };

  /** This node's Prometheus metrics (also served on the node's `metrics` listener). */
  get metrics(): NodeMetrics {
    return (this.metricsOf ??= new NodeMetrics(this.nodeId, 'gateway', { processMetrics: true }));
  }

  /** URL of this node's /metrics listener, when the topology gives it one. */
  get metricsUrl(): string | undefined {
    return this.metricsServer?.url;
  }
  private queue?: EnvelopeQueue;
  /** Background work (CRL publications) that stop() waits for. */
  private readonly inflight = new Set<Promise<void>>();
  private audit?: AuditLog;
  private http?: FastifyInstance;
  private readonly replay: ReplayGuard;
  private readonly results: Collection<ResultRecord>;
  private readonly certs: Collection<IssuanceRecord>;
  /** Envelope ids a non-idempotent CA service was called for (see callOnce). */
  private readonly casCalls: Collection<{ at: number; what: 'sign' }>;
  private crlTimer?: NodeJS.Timeout;
  private stopping?: Promise<void>;
  private readonly layers: Map<string, PolicyLayer>;
  /** Count of CA calls made by this process (tests and metrics read it). */
  issued = 0;

  private constructor(
    readonly nodeId: string,
    private readonly topology: Topology,
    private readonly db: NodeStore,
    private readonly key: NodeKey,
    private readonly keys: KeyRing,
    readonly cas: CertificateAuthorityService,
    private readonly log: Logger,
    private readonly locks: KeyedLock,
    /**
     * Calls to the CA service under way at once, over all requests (cas.maxInFlight): a bundle brings many
     * requests at a time, and a remote CA must not see them all at once.
     */
    private readonly casSlots: Semaphore,
  ) {
    this.results = db.collection('result');
    this.certs = db.collection('issued-cert');
    this.casCalls = db.collection('cas-call');
    this.replay = new ReplayGuard({ ttlMs: parseDuration(topology.config.envelope.ttl) * 2, max: 100_000 });
    this.layers = new Map(topology.nodes.map((n) => [n.id, new PolicyLayer(n.id, n.policy)]));
  }

  static async create(opts: GatewayServiceOptions): Promise<GatewayService> {
    const { topology } = opts;
    const nodeId = opts.nodeId ?? topology.gateway().id;
    const node = topology.node(nodeId);
    if (node.role !== 'gateway') throw new Error(`node "${nodeId}" is a ${node.role}, not the gateway`);
    const log = opts.log ?? createGatewayLogger(nodeId);
    const db = await NodeStore.open(topology.storeDir(nodeId));
    try {
      const key = await loadOrCreateMeshNodeKey(topology, nodeId);
      const keys = opts.keys ?? (await loadMeshKeyRing(topology));
      const locks = new KeyedLock();
      const casConfig = node.cas ?? casSchema.parse({ type: 'builtin' });
      const cas = opts.cas ?? (await createCas(casConfig, { topology, nodeId, db, locks, log }));
      return new GatewayService(nodeId, topology, db, key, keys, cas, log, locks, new Semaphore(casConfig.maxInFlight));
    } catch (e) {
      // A CA service that cannot start (bad credentials file, unreachable root) must not leave the store locked.
      await db.close();
      throw e;
    }
  }

  /** Base URL of the HTTP endpoint (/roots.pem, /health). */
  httpUrl?: string;
  /** SHA-256 fingerprints of the trust anchors the CA service hands out (operators pin these). */
  rootFingerprints: string[] = [];

  async start(): Promise<void> {
    const metricsListen = this.topology.node(this.nodeId).metrics;
    if (metricsListen) this.metricsServer = await this.metrics.serve(metricsListen);
    this.nc = await connectBus(this.topology.natsUrl(this.nodeId), {
      name: this.nodeId,
      log: this.log,
      connection: await nodeConnectOptions(this.topology, this.nodeId),
    });
    this.metrics.watchNats(this.nc);
    this.audit = await AuditLog.open(auditDir(this.topology, this.nodeId));
    // A failed CA call is retried after a pause, not at once.
    const queue = (this.queue = await EnvelopeQueue.open(this.nc, this.topology, this.nodeId, { log: this.log, retryDelayMs: 5_000, observer: this.metrics }));
    this.metrics.bind({
      inFlight: () => queue.inFlight,
      links: () => queue.linkStates(),
      casCalls: () => ({ running: this.casSlots.running, waiting: this.casSlots.queued }),
    });
    this.queue.consume((data, info) => this.onEnvelope(data, info));
    this.http = Fastify({ logger: false });
    this.http.get('/roots.pem', async (_req, reply) => reply.type('application/pem-certificate-chain').send(await this.cas.rootsPem()));
    this.http.get('/metrics', async (_req, reply) => reply.type(this.metrics.contentType).send(await this.metrics.text()));
    // The live status page and the mesh view it polls (also read by `ra-mesh top`).
    const status = new StatusCollector(this.topology, this.nodeId, this.metrics);
    this.http.get('/status', async (_req, reply) => reply.type('text/html; charset=utf-8').header('cache-control', 'no-store').send(statusPageHtml({ title: `ra-mesh ${this.topology.config.mesh}` })));
    this.http.get('/status.json', async (_req, reply) => reply.header('cache-control', 'no-store').send(await status.current()));
    // The CA's CRL (RFC 5280), DER as application/pkix-crl (RFC 2585 §4.2).
    this.http.get('/crl', async (_req, reply) => {
      const cas = this.cas;
      if (!hasCrl(cas)) return reply.code(404).type('text/plain').send(`the ${cas.type} CA service publishes no CRL here`);
      const crl = await cas.currentCrl();
      return reply.type('application/pkix-crl').header('cache-control', 'no-cache').send(Buffer.from(crl.der));
    });
    this.http.get('/health', async () => ({ status: 'ok', node: this.nodeId, nats: this.nc?.isClosed() ? 'closed' : 'connected', cas: this.cas.type }));
    const [host, port] = splitHostPort(this.topology.node(this.nodeId).http ?? '127.0.0.1:8080');
    await this.http.listen({ host, port });
    const addr = this.http.server.address();
    this.httpUrl = typeof addr === 'object' && addr ? `http://${urlHost(host)}:${addr.port}` : undefined;
    try {
      this.rootFingerprints = pemToDer(await this.cas.rootsPem(), 'CERTIFICATE').map(fingerprint);
    } catch (e) {
      // A CA service that is only unreachable (not misconfigured) does not keep the gateway down:
      // envelopes wait in the queue until it answers, and /roots.pem asks it again.
      const err = toRaError(e);
      if (isFinalCasError(err)) throw err;
      this.log.warn({ err: err.cause ?? err, detail: err.detail }, 'the CA service is not reachable yet; its roots are unknown until it answers');
    }
    if (hasCrl(this.cas)) {
      this.track(this.publishCrl());
      this.crlTimer = setInterval(() => this.track(this.publishCrl()), CRL_PUBLISH_INTERVAL_MS);
      this.crlTimer.unref();
    }
    this.log.info({ roots: `${this.httpUrl}/roots.pem`, rootFingerprints: this.rootFingerprints, cas: this.cas.type }, 'gateway started');
  }

  /** Stops the gateway; a second call waits for the first (its files are closed once). */
  stop(): Promise<void> {
    this.stopping ??= this.stopOnce();
    return this.stopping;
  }

  private async stopOnce(): Promise<void> {
    await this.metricsServer?.close();
    if (this.crlTimer) clearInterval(this.crlTimer);
    await this.queue?.stop();
    // In-flight work may start a CRL publication: wait for that too (bounded).
    for (let i = 0; i < 10 && this.inflight.size > 0; i++) await Promise.allSettled([...this.inflight]);
    await this.audit?.close();
    await this.http?.close();
    if (this.nc && !this.nc.isClosed()) await this.nc.drain().catch(() => undefined);
    await this.db.close();
    this.log.info('gateway stopped');
  }

  /**
   * One inbound message (a lone envelope or a relay's bundle): acked once the result of every request
   * it carries is stored (and sent), dropped when nothing in it is acceptable, delivered again when a
   * request could not be handled now (the others are then answered from the result store).
   */
  private async onEnvelope(data: Uint8Array, info: MessageInfo): Promise<Disposition> {
    const recvAt = info.recvAt;
    let msg: VerifiedMessage;
    try {
      msg = await verifyMessage(new TextDecoder().decode(data), { topology: this.topology, verifier: this.nodeId, keys: this.keys, replay: this.replay });
    } catch (e) {
      // A malformed or forged envelope is dropped and logged; it never crashes the node.
      // The id is the bus header's claim (the envelope did not verify).
      this.reject(toRaError(e), info, recvAt, info.envelopeId);
      return 'drop';
    }
    for (const r of msg.rejected) this.reject(r.error, info, recvAt, r.id);
    if (msg.envelopes.length === 0) return msg.excluded.length > 0 ? 'ack' : 'drop';
    const done: Disposition[] = [];
    // A bundle's requests BUNDLE_PARALLEL at a time: the CA service sees no more than that per message.
    let next = 0;
    await Promise.all(
      Array.from({ length: Math.min(BUNDLE_PARALLEL, msg.envelopes.length) }, async () => {
        while (next < msg.envelopes.length) {
          const env = msg.envelopes[next++]!;
          done.push(await this.answer(env, info, recvAt));
          // The other messages waiting for CA slots behind this one stay kept from redelivery (queue.ts).
          info.progress();
        }
      }),
    );
    if (done.includes('retry')) return 'retry';
    return done.every((d) => d === 'drop') ? 'drop' : 'ack';
  }

  private reject(err: RaError, info: MessageInfo, recvAt: number, envelopeId: string | undefined): void {
    this.metrics.envelopeRejected(err.reason ?? err.type, recvAt, envelopeId);
    this.log.warn({ envelopeId, from: info.from, reason: err.reason ?? err.type, detail: err.detail }, 'envelope rejected and dropped');
  }

  /** One verified request: its result stored and sent ('ack'), or 'retry' / 'drop'. */
  private async answer(env: VerifiedEnvelope, info: MessageInfo, recvAt: number): Promise<Disposition> {
    const id = env.payload.id;
    const log = this.log.child({ envelopeId: id, origin: env.payload.origin.node });
    log.debug({ from: info.from, waitMs: info.waitMs, hops: env.hops.map((h) => ({ node: h.node, ms: (h.sentAt ?? h.recvAt) - h.recvAt })) }, 'envelope received');
    return this.locks.run(id, async (): Promise<Disposition> => {
      const prior = await this.results.get(id);
      if (prior) {
        if (prior.digest !== env.digest) {
          log.warn('envelope id reused with other content: dropped');
          this.metrics.hopDone('dropped', recvAt);
          return 'drop';
        }
        // Idempotent redelivery: the stored answer again, never a second certificate.
        log.info({ status: prior.status }, 'redelivered envelope answered from the result store');
        this.publishResult(prior.edge, prior.jws, id);
        this.metrics.hopDone('answered', recvAt);
        return 'ack';
      }
      for (const h of env.hops) {
        const current = this.layers.get(h.node)?.label;
        if (current !== h.policy) log.warn({ node: h.node, hopPolicy: h.policy, topologyPolicy: current }, 'relay applied a policy layer that differs from the topology');
      }
      let result: Omit<ResultPayload, 'iat'>;
      let serial: string | undefined;
      let notAfter: Date | undefined;
      let issuance: IssuanceRecord | undefined;
      const revoke = env.payload.kind === 'revoke';
      try {
        if (env.payload.kind === 'revoke') {
          const r = await this.revoke(env as VerifiedEnvelope<RevokePayload>, log);
          serial = r.serial;
          result = this.resultPayload(env, recvAt, { kind: 'revoke', status: 'valid', revocation: { serial: r.serial, reason: r.reason, revokedAt: r.revokedAt.toISOString() } });
        } else {
          const p = env.payload;
          const issued = await this.issue(env as VerifiedEnvelope<EdgePayload>, log);
          serial = issued.serial;
          notAfter = issued.notAfter;
          issuance = {
            serial,
            edge: p.origin.node,
            envelopeId: p.id,
            accountId: p.account.id,
            identifiers: p.identifiers.map(({ type, value }) => ({ type, value })),
            at: Date.now(),
            // SHA-256 of the leaf DER (what certificateFacts().digest is), without parsing the certificate again.
            leafDigest: createHash('sha256').update(leafDer(issued.chainPem)).digest('base64url'),
          };
          result = this.resultPayload(env, recvAt, { status: 'valid', certificate: issued.chainPem });
        }
      } catch (e) {
        const err = toRaError(e);
        if (!isFinalCasError(err)) {
          // Transient or internal: nothing is stored; the queue delivers the envelope again (backing off).
          log.error({ err: err.cause ?? err, detail: err.detail }, 'request failed; will be retried');
          this.metrics.hopDone('retry', recvAt);
          return 'retry';
        }
        this.metrics.refused(casFailures.has(e as object) ? 'cas' : this.nodeId, err.type, id, err.detail);
        if (err.type === 'serverInternal') log.error({ err: err.cause ?? err, reason: err.reason, detail: err.detail }, 'CA service failure answered to the client');
        else log.info({ problem: err.type, detail: err.detail }, 'request refused');
        result = this.resultPayload(env, recvAt, { ...(revoke ? { kind: 'revoke' as const } : {}), status: 'invalid', problem: err.toProblem() });
      }
      const payload = { ...result, gateway: { ...result.gateway, sentAt: Date.now() }, iat: Math.floor(Date.now() / 1000) } as ResultPayload;
      const jws = await signResult(payload, this.key);
      // Audit first: a crash before the result is stored re-runs this (the CA answers from its record),
      // so a decision is never missing from the audit log, at worst recorded twice under one id.
      const p = env.payload;
      await this.audit!.append({
        event: revoke ? (payload.status === 'valid' ? 'revoked' : 'revoke-refused') : payload.status === 'valid' ? 'issued' : 'refused',
        id,
        path: env.path.concat(this.nodeId),
        account: p.kind === 'revoke' ? (p.requester.account ?? `certificate-key:${p.requester.jwkThumbprint}`) : p.account.id,
        identifiers: p.kind === 'revoke' ? [] : p.identifiers.map((i) => `${i.type}:${i.value}`),
        ...(serial ? { serial } : {}),
        ...(notAfter ? { notAfter: notAfter.toISOString() } : {}),
        ...(payload.problem ? { problem: { type: payload.problem.type, detail: payload.problem.detail } } : {}),
      });
      const record: ResultRecord = { id, digest: env.digest, edge: env.payload.origin.node, status: payload.status, jws, ...(serial ? { serial } : {}), at: Date.now() };
      // The answer and the issuance record (serial -> origin edge) are stored together.
      await this.db.batch([
        { coll: this.results as never, type: 'put', key: id, value: record },
        ...(issuance ? [{ coll: this.certs as never, type: 'put' as const, key: issuance.serial, value: issuance }] : []),
      ]);
      this.publishResult(env.payload.origin.node, jws, id);
      log.info({ kind: env.payload.kind, status: payload.status, serial, path: env.path }, 'result sent');
      if (revoke && payload.status === 'valid') this.track(this.publishCrl());
      this.metrics.hopDone(payload.status === 'valid' ? (revoke ? 'revoked' : 'issued') : 'refused', recvAt);
      return 'ack';
    });
  }

  private resultPayload(env: VerifiedEnvelope, recvAt: number, r: Pick<ResultPayload, 'kind' | 'status' | 'certificate' | 'revocation' | 'problem'>): Omit<ResultPayload, 'iat'> {
    return {
      v: 1,
      id: env.payload.id,
      edge: env.payload.origin.node,
      ...r,
      hops: env.hops,
      gateway: { node: this.nodeId, recvAt, sentAt: 0 },
    } as Omit<ResultPayload, 'iat'>;
  }

  /**
   * A revocation: only of a certificate this gateway issued, and only when asked by the edge that
   * requested it (the chain below was verified against the topology, so origin.node is that edge).
   * Policy layers do not apply to revocations.
   */
  private async revoke(env: VerifiedEnvelope<RevokePayload>, log: Logger): Promise<{ serial: string; reason: RevokePayload['reason']; revokedAt: Date }> {
    const p = env.payload;
    const issued = await this.issuanceOf(p.serial);
    if (!issued) throw new RaError('malformed', { detail: `the certificate ${p.serial} was not issued through this gateway` });
    if (issued.edge !== p.origin.node) {
      log.warn({ serial: p.serial, issuedTo: issued.edge }, 'revocation asked by an edge that did not request the certificate: refused');
      throw new RaError('unauthorized', { detail: `the certificate ${p.serial} was not requested through edge "${p.origin.node}"` });
    }
    // Revoking is safe to repeat at every CA service (a second call at worst answers alreadyRevoked, which
    // the edge records as revoked), so it is not guarded like signing.
    const res = await this.casSlots.run(() => this.timedCas('revoke', () => this.cas.revokeCertificate({ serial: p.serial, reason: p.reason, requestId: p.id })));
    const rec = await this.certs.get(p.serial);
    if (rec && !rec.revokedAt) await this.certs.put(p.serial, { ...rec, revokedAt: res.revokedAt.toISOString() });
    log.info({ serial: res.serial, reason: res.reason, by: p.requester.method, account: p.requester.account }, 'certificate revoked');
    return res;
  }

  /** The issuance record of a serial; for certificates issued before the index existed, the result records. */
  private async issuanceOf(serial: string): Promise<Pick<IssuanceRecord, 'serial' | 'edge'> | undefined> {
    const rec = await this.certs.get(serial);
    if (rec) return rec;
    for await (const [, r] of this.results.entries()) if (r.serial === serial && r.status === 'valid') return { serial, edge: r.edge };
    return undefined;
  }

  /** Keeps a background task in the in-flight set, so stop() waits for it before closing the store. */
  private track(p: Promise<void>): void {
    this.inflight.add(p);
    void p.finally(() => this.inflight.delete(p));
  }

  /** Signs the CA's current CRL into a CRL message and publishes it to every edge (best effort, repeated). */
  private async publishCrl(): Promise<void> {
    const cas = this.cas;
    if (!hasCrl(cas) || !this.nc || this.nc.isClosed()) return;
    try {
      const crl = await cas.currentCrl();
      const jws = await signCrlMessage(
        {
          v: 1,
          kind: 'crl',
          gateway: this.nodeId,
          number: crl.number,
          thisUpdate: Math.floor(crl.thisUpdate.getTime() / 1000),
          nextUpdate: Math.floor(crl.nextUpdate.getTime() / 1000),
          crl: Buffer.from(crl.der).toString('base64url'),
          iat: Math.floor(Date.now() / 1000),
        },
        this.key,
      );
      const data = new TextEncoder().encode(jws);
      for (const e of this.topology.edges()) this.nc.publish(downSubject(e.id), data);
      this.log.debug({ number: crl.number }, 'CRL published to the edges');
    } catch (e) {
      this.log.error({ err: e }, 'CRL publication failed');
    }
  }

  /**
   * A call to the CA service for one envelope. An idempotent service (builtin, Google CAS) is simply
   * called: the same requestId gets the first answer. For the others the gateway records the call
   * before making it; finding that record on a later delivery (the gateway died mid-call, or the call
   * ended ambiguously) means the CA may have acted, so the request is answered as outcome-unknown and
   * never sent twice. A call that surely never reached the CA (cas-unavailable) clears the record.
   */
  private async callOnce<T>(id: string, what: 'sign', call: () => Promise<T>): Promise<T> {
    if (this.cas.idempotent) return call();
    if (await this.casCalls.get(id)) {
      throw new RaError('serverInternal', {
        reason: 'cas-outcome-unknown',
        detail: `an earlier ${what} call to the CA service (${this.cas.type}) for this request was interrupted and its outcome is unknown; it is not repeated: start a new order`,
      });
    }
    await this.casCalls.put(id, { at: Date.now(), what });
    try {
      return await call();
    } catch (e) {
      if (e instanceof RaError && e.reason === 'cas-unavailable') await this.casCalls.del(id);
      throw e;
    }
  }

  /**
   * A renewal with the old key (names validated by 'renewal'): the renewed certificate is exactly one
   * this gateway issued, to the same edge and ACME account, not revoked, and the CSR carries its key.
   * The window of this layer was checked by enforceRenewal; every relay checked its own.
   */
  private async checkRenewal(p: EdgePayload, csrSpki: Uint8Array, renewed: CertificateFacts, log: Logger): Promise<void> {
    const issued = await this.certs.get(renewed.serial);
    if (!issued || issued.leafDigest !== renewed.digest) throw new RaError('unauthorized', { detail: 'the renewed certificate was not issued through this gateway' });
    if (issued.edge !== p.origin.node || issued.accountId !== p.account.id) {
      log.warn({ serial: renewed.serial, issuedTo: issued.edge }, 'renewal of a certificate issued to another edge or account: refused');
      throw new RaError('unauthorized', { detail: 'the renewed certificate was issued to another edge or account' });
    }
    if (issued.revokedAt) throw new RaError('unauthorized', { detail: `the renewed certificate was revoked at ${issued.revokedAt}; it cannot be renewed with its key` });
    if (!Buffer.from(csrSpki).equals(Buffer.from(renewed.spki))) {
      throw new RaError('badCSR', { detail: 'a renewal with the old key needs a CSR for that key' });
    }
  }

  /** Final checks of the gateway layer, then the one CA call. */
  private async issue(env: VerifiedEnvelope<EdgePayload>, log: Logger): Promise<{ chainPem: string; serial: string; notAfter: Date }> {
    const p = env.payload;
    const csr = await parseCsr(Buffer.from(p.csr, 'base64url'), { otherNames: true });
    const want = new Set(p.identifiers.map((i) => `${i.type}:${i.value}`));
    const got = new Set(csrNames(csr).map((i) => `${i.type}:${i.value}`));
    // RFC 8555 §7.4: the CSR names exactly the validated identifiers; checked again here (never trust the hop below).
    if (want.size !== got.size || [...got].some((k) => !want.has(k)) || csr.emailAddresses.length + csr.uris.length > 0) {
      throw new RaError('badCSR', { detail: 'the CSR does not name exactly the validated identifiers' });
    }
    const unvalidated = p.identifiers.filter((i) => !i.validation);
    if (unvalidated.length > 0) {
      throw new RaError('unauthorized', { detail: `no validation record for ${unvalidated.map((i) => i.value).join(', ')}` });
    }
    const layer = this.layers.get(this.nodeId)!;
    // This layer on the identifiers, the CSR, the requested validity, the renewal window, then its rate limits.
    const { renewed } = await enforceHop(layer, p, { csr });
    // SCEP validation methods only from edges the topology gives a scep block.
    enforceValidationMethods(this.topology, p);
    if (renewed) await this.checkRenewal(p, csr.publicKeySpki, renewed, log);
    const path = this.topology.pathToGateway(p.origin.node);
    // The lifetime from every layer in evaluation order: account (carried by the edge), edge, relays, gateway.
    const account = accountLifetimeLayer(p.account);
    const { lifetimeMs } = resolveValidity([...(account ? [account] : []), ...path.map((id) => ({ name: id, ...this.topology.node(id).policy }))], p.requested);
    // The slot first: a non-idempotent CA's call record (callOnce) is written only when the call goes out.
    const res = await this.casSlots.run(() => this.callOnce(p.id, 'sign', () => this.timedCas('sign', () => this.cas.createCertificate({
      csrDer: csr.der,
      dnsNames: p.identifiers.filter((i) => i.type === 'dns').map((i) => i.value),
      ipAddresses: p.identifiers.filter((i) => i.type === 'ip').map((i) => i.value),
      lifetimeMs,
      ...(p.requested.notBefore ? { notBefore: new Date(p.requested.notBefore) } : {}),
      requestId: p.id,
      provenance: { path: env.path.concat(this.nodeId), origin: p.origin, accountId: p.account.id },
    }))));
    this.issued += 1;
    // Fault-injection point for crash tests: the CA has signed, nothing is stored or sent yet.
    faultPoint('gateway.after-cas');
    log.info({ serial: res.serial, notAfter: res.notAfter.toISOString(), lifetimeMs }, 'certificate issued');
    return res;
  }

  /** One call to the CA service, timed and counted (ramesh_cas_request_duration_seconds, ramesh_cas_errors_total). */
  private async timedCas<T>(op: 'sign' | 'revoke', call: () => Promise<T>): Promise<T> {
    const started = Date.now();
    try {
      const res = await call();
      this.metrics.cas(op, 'ok', Date.now() - started);
      return res;
    } catch (e) {
      const err = toRaError(e);
      this.metrics.cas(op, isFinalCasError(err) ? 'refused' : 'failed', Date.now() - started, err.reason ?? err.type);
      if (typeof e === 'object' && e !== null) casFailures.add(e);
      throw e;
    }
  }

  private publishResult(edge: string, jws: string, id: string): void {
    if (!this.nc || this.nc.isClosed()) return;
    const h = natsHeaders();
    h.set(ENVELOPE_ID_HEADER, id);
    this.nc.publish(downSubject(edge), new TextEncoder().encode(jws), { headers: h });
  }
}
