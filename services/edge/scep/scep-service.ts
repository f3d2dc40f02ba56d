import { createHash, createPublicKey, timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import Fastify, { type FastifyInstance } from 'fastify';
import { parseDuration, splitHostPort, urlHost, type ScepConfig, type Topology } from '../../../shared/config/index.js';
import { clockSkewMs, newEdgePayload, signEdgeEnvelope, type EdgePayload, type EnvelopeIdentifier, type NodeKey, type ResultPayload } from '../../../shared/envelope/index.js';
import { scepAccountId, scepRaAccountId } from '../../../shared/envelope/validation-methods.js';
import { toRaError } from '../../../shared/errors/index.js';
import type { NodeMetrics } from '../../../shared/metrics/node-metrics.js';
import { certificateFacts, csrNames, derToPem, leafDer, leafSerial, parseCsr, pemToDer, x509, type CsrInfo } from '../../../shared/pki/index.js';
import { admitOrderAtEdge, enforceCsrAtEdge, enforceOrderAtEdge, noteUpstreamRefusal, type PolicyLayer } from '../../../shared/policy/index.js';
import type { KeyedLock } from '../../../shared/store/index.js';
import type { AcmeStore, CertificateRecord } from '../acme/records.js';
import type { Logger } from '../logger.js';
import { CmsError, degenerateCertificates } from './cms.js';
import { certRep, MESSAGE_TYPE, messageTypeName, parsePkiRequest, PkiRequestError, type FailInfo, type PkiRequest } from './messages.js';
import { ScepRaIdentity } from './ra-identity.js';
import { DueIndex } from '../due-index.js';
import { ScepStore, transactionKey, type ScepOutboxRecord, type ScepTransactionRecord } from './scep-store.js';

// SCEP (RFC 8894) at the edge, for devices that cannot speak ACME. A device's PKCSReq is authorized
// here by its challenge password (the segment's secret, or a one-time password), a RenewalReq by the
// certificate it renews (signed with its key, within every layer's renewAfterExpiry window); either
// becomes a signed envelope that travels the mesh exactly like a finalized ACME order (the same
// durable path: the edge store's outbox, then the edge's JetStream stream). The device is told
// PENDING while it travels (RFC 8894 §3.3.2) and polls, by CertPoll (§3.3.3) or by sending the same
// request again; it gets SUCCESS with its certificate once the result is here, FAILURE with a
// failInfo when the mesh refused it. Every step is in the edge store: a restart loses nothing.

export interface EdgeScepDeps {
  nodeId: string;
  topology: Topology;
  config: ScepConfig;
  acme: AcmeStore;
  key: NodeKey;
  locks: KeyedLock;
  log: Logger;
  /** Policy layers of the path (edge first): checked before anything travels. */
  layers: PolicyLayer[];
  /** Into the edge's outbound stream (JetStream on its segment's NATS server). */
  /** `attempt` 1: the first copy; later: a retransmit (EnvelopeQueue.resend). */
  publish(envelopeId: string, jws: string, attempt: number): void;
  /** A certificate the edge received, by the leaf DER. */
  findCertificate(der: Uint8Array): Promise<CertificateRecord | undefined>;
  /** Revokes (cessationOfOperation) a certificate that arrived after its request had expired. */
  revokeLate(cert: CertificateRecord, jwkThumbprint: string): Promise<void>;
  metrics?: NodeMetrics;
  retransmitMs: number;
}

/** How a PKIOperation is answered (HTTP status and body). */
interface HttpAnswer {
  status: number;
  type: string;
  body: Buffer | string;
  headers?: Record<string, string>;
}

const PKI_MESSAGE = 'application/x-pki-message';
const MAX_MESSAGE_BYTES = 256 * 1024;
/** After a refused RA certificate request, wait this long before asking again. */
const RA_RETRY_MS = 5 * 60_000;
const PRUNE_INTERVAL_MS = 10 * 60_000;

class Refusal extends Error {
  constructor(
    readonly failInfo: FailInfo,
    readonly text: string,
  ) {
    super(text);
  }
}

const sha256 = (b: Uint8Array | string) => createHash('sha256').update(b).digest('base64url');

export class EdgeScep {
  readonly store: ScepStore;
  readonly ra: ScepRaIdentity;
  private app?: FastifyInstance;
  private readonly waiters = new Map<string, Set<() => void>>();
  private raRetryAt = 0;
  private lastPruneAt = 0;
  /** When each outbox envelope next needs the sweep: its retransmit, or the end of its deadline. */
  private readonly due: DueIndex<ScepOutboxRecord>;
  /** URL of the SCEP listener (http://host:port/scep). */
  url?: string;

  constructor(private readonly d: EdgeScepDeps) {
    this.store = new ScepStore(d.acme.db);
    const skew = clockSkewMs(d.topology);
    this.due = new DueIndex<ScepOutboxRecord>((out) => Math.min(out.nextAt, out.deadline + skew + 1));
    this.ra = new ScepRaIdentity(this.store, d.config.raName);
  }

  private get cfg(): ScepConfig {
    return this.d.config;
  }

  async start(): Promise<void> {
    await this.ra.load();
    await this.due.load(this.store.outbox.entries());
    await this.ensureRaCertificate(Date.now());
    this.app = this.buildServer();
    const [host, port] = splitHostPort(this.cfg.listen);
    await this.app.listen({ host, port });
    const addr = this.app.server.address();
    this.url = `http://${urlHost(host)}:${typeof addr === 'object' && addr ? addr.port : port}/scep`;
    this.d.log.info({ scep: this.url, raName: this.cfg.raName, ra: this.ra.current ? 'ready' : 'requested from the mesh CA' }, 'SCEP listening');
  }

  async stop(): Promise<void> {
    // Requests waiting for a result are answered (PENDING) first, so that closing does not wait for them.
    for (const set of this.waiters.values()) for (const w of [...set]) w();
    await this.app?.close();
  }

  /** Whether the RA certificate has arrived from the mesh CA (GetCACert and PKIOperation need it). */
  get ready(): boolean {
    return this.ra.current !== undefined;
  }

  // -------------------------------------------------------------------------------------------
  // HTTP (RFC 8894 §4)

  private buildServer(): FastifyInstance {
    const app = Fastify({ logger: false, bodyLimit: MAX_MESSAGE_BYTES, return503OnClosing: true }) as unknown as FastifyInstance;
    app.removeAllContentTypeParsers();
    // RFC 8894 §4.3: POST carries the binary pkiMessage (application/x-pki-message; some clients send octet-stream).
    app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
    const handler = async (req: { query: unknown; body?: unknown; method: string }, reply: import('fastify').FastifyReply) => {
      const q = req.query as Record<string, string | undefined>;
      const a = await this.operation(q.operation, req.method, q.message, req.body as Buffer | undefined);
      for (const [k, v] of Object.entries(a.headers ?? {})) reply.header(k, v);
      return reply.code(a.status).type(a.type).send(a.body);
    };
    // RFC 8894 §4.1: the path is the server's choice; /cgi-bin/pkiclient.exe is what old clients assume.
    for (const path of ['/scep', '/cgi-bin/pkiclient.exe']) {
      app.get(path, handler);
      app.post(path, handler);
    }
    // The gateway's latest CRL, here too: devices of an isolated segment fetch it locally (RFC 2585 §4.2).
    app.get('/crl', async (_req, reply) => {
      const crl = await this.d.acme.crl.get('current');
      if (!crl) return reply.code(404).type('text/plain').send('no CRL has reached this edge yet');
      return reply.code(200).type('application/pkix-crl').header('cache-control', 'no-cache').send(Buffer.from(crl.der, 'base64url'));
    });
    app.setErrorHandler(async (err, req, reply) => {
      const code = (err as { code?: string }).code;
      if (code === 'FST_ERR_CTP_BODY_TOO_LARGE') return reply.code(413).type('text/plain').send(`the pkiMessage exceeds ${MAX_MESSAGE_BYTES} bytes`);
      this.d.log.error({ err, url: req.url }, 'SCEP request failed');
      return reply.code(500).type('text/plain').send('internal error of the SCEP service');
    });
    return app;
  }

  /** One SCEP operation (RFC 8894 §4.2-§4.5). */
  async operation(op: string | undefined, method: string, message: string | undefined, body: Buffer | undefined): Promise<HttpAnswer> {
    const text = (status: number, t: string, headers?: Record<string, string>): HttpAnswer => ({ status, type: 'text/plain; charset=utf-8', body: t + '\n', ...(headers ? { headers } : {}) });
    switch (op) {
      case 'GetCACaps':
        // RFC 8894 §3.5.2: one capability per line.
        return { status: 200, type: 'text/plain', body: this.capabilities().join('\n') + '\n' };
      case 'GetCACert': {
        const ra = this.ra.current;
        if (!ra) return text(503, 'the RA certificate has not arrived from the mesh CA yet; try again later', { 'Retry-After': '30' });
        // RFC 8894 §4.2.1.2: with an RA, a degenerate certificates-only CMS of the RA and CA certificates.
        return { status: 200, type: 'application/x-x509-ca-ra-cert', body: Buffer.from(degenerateCertificates(ra.chain)) };
      }
      case 'PKIOperation': {
        let der: Uint8Array;
        if (method === 'POST') {
          if (!body || body.length === 0) return text(400, 'PKIOperation by POST needs the pkiMessage as the body');
          der = new Uint8Array(body);
        } else {
          // RFC 8894 §4.3: GET carries the base64 pkiMessage in "message" (some clients use the URL-safe alphabet).
          if (!message) return text(400, 'PKIOperation by GET needs the base64 pkiMessage in the "message" parameter');
          der = new Uint8Array(Buffer.from(message.replace(/-/g, '+').replace(/_/g, '/').replace(/ /g, '+'), 'base64'));
        }
        return this.pkiOperation(der);
      }
      default:
        return text(400, `unknown SCEP operation ${JSON.stringify(op ?? '')}; this server answers GetCACaps, GetCACert and PKIOperation`);
    }
  }

  /** RFC 8894 §3.5.2 capabilities. */
  capabilities(): string[] {
    return ['AES', 'DES3', 'POSTPKIOperation', 'Renewal', ...(this.cfg.legacyCrypto ? ['SHA-1'] : []), 'SHA-256', 'SHA-512', 'SCEPStandard'];
  }

  // -------------------------------------------------------------------------------------------
  // PKIOperation

  private async pkiOperation(der: Uint8Array): Promise<HttpAnswer> {
    const ra = this.ra.current;
    if (!ra) return { status: 503, type: 'text/plain', body: 'the RA certificate has not arrived from the mesh CA yet; try again later\n', headers: { 'Retry-After': '30' } };
    let req: PkiRequest;
    try {
      req = parsePkiRequest(der, this.ra.recipients(), { legacyCrypto: this.cfg.legacyCrypto });
    } catch (e) {
      if (e instanceof PkiRequestError) {
        this.d.log.info({ transactionId: e.context.transactionId, failInfo: e.failInfo, detail: e.message }, 'SCEP request refused');
        try {
          return this.answer(this.failure(e.context, e.failInfo, e.message));
        } catch {
          // A transactionID that is no PrintableString cannot be answered in a CertRep.
          return { status: 400, type: 'text/plain', body: `the pkiMessage was refused: ${e.message}\n` };
        }
      }
      if (e instanceof CmsError) {
        // Nothing of it can be trusted, not even the transactionID to answer: a plain HTTP refusal.
        this.d.log.info({ detail: e.message }, 'SCEP message refused');
        return { status: 400, type: 'text/plain', body: `the pkiMessage was refused: ${e.message}\n` };
      }
      throw e;
    }
    const log = this.d.log.child({ transactionId: req.transactionId, messageType: messageTypeName(req.messageType) });
    switch (req.messageType) {
      case MESSAGE_TYPE.PKCSReq:
      case MESSAGE_TYPE.RenewalReq:
        return this.answer(await this.request(req, log));
      case MESSAGE_TYPE.CertPoll: {
        // RFC 8894 §3.3.3: the poll is identified by its transactionID (and signed by the same certificate).
        const key = transactionKey(req.transactionId, req.signer.der);
        const rec = await this.waitFor(key, await this.store.transactions.get(key));
        if (!rec) return this.answer(this.failure(req, 'badCertId', 'no certificate request with this transactionID was made by this signer'));
        return this.answer(this.reply(req, rec));
      }
      default:
        return this.answer(
          this.failure(req, 'badRequest', `${messageTypeName(req.messageType)} is not supported by this SCEP service (the CRL is at GET /crl of this listener)`),
        );
    }
  }

  private answer(der: Uint8Array): HttpAnswer {
    return { status: 200, type: PKI_MESSAGE, body: Buffer.from(der) };
  }

  private failure(req: Pick<PkiRequest, 'transactionId' | 'senderNonce'>, failInfo: FailInfo, text: string): Uint8Array {
    return certRep({ transactionId: req.transactionId, recipientNonce: req.senderNonce, status: 'FAILURE', failInfo, failText: text, ra: this.raSigner() });
  }

  private raSigner(): { cert: Uint8Array; key: import('node:crypto').KeyObject } {
    const ra = this.ra.current!;
    return { cert: ra.cert, key: ra.key };
  }

  /** The CertRep for a transaction's state. */
  private reply(req: PkiRequest, rec: ScepTransactionRecord): Uint8Array {
    const base = { transactionId: req.transactionId, recipientNonce: req.senderNonce, ra: this.raSigner() };
    if (rec.status === 'issued') {
      return certRep({
        ...base,
        status: 'SUCCESS',
        // RFC 8894 §3.3.2: the issued certificate first; its chain after it.
        certificates: pemToDer(rec.chainPem!, 'CERTIFICATE'),
        recipient: new Uint8Array(Buffer.from(rec.signerCert, 'base64')),
        cipher: rec.cipher,
      });
    }
    if (rec.status === 'failed') return certRep({ ...base, status: 'FAILURE', failInfo: rec.failInfo ?? 'badRequest', ...(rec.failText ? { failText: rec.failText } : {}) });
    return certRep({ ...base, status: 'PENDING' });
  }

  /** A PKCSReq or RenewalReq: a repeated one is a poll; a new one is authorized and sent up the mesh. */
  private async request(req: PkiRequest, log: Logger): Promise<Uint8Array> {
    let csr: CsrInfo;
    try {
      csr = await parseCsr(req.messageData);
    } catch (e) {
      const err = toRaError(e);
      log.info({ detail: err.detail }, 'SCEP request refused: bad CSR');
      return this.failure(req, 'badRequest', `the certificate request was refused: ${err.detail}`);
    }
    const key = transactionKey(req.transactionId, req.signer.der);
    const csrDigest = sha256(csr.der);
    const outcome = await this.d.locks.run(`scep:${key}`, async (): Promise<ScepTransactionRecord | Refusal> => {
      const prior = await this.store.transactions.get(key);
      if (prior && prior.status !== 'failed') {
        // RFC 8894 §3.3.1: the same transaction again (a device polling by resending its request).
        if (prior.csrDigest !== csrDigest) return new Refusal('badRequest', 'this transactionID is already used by another certificate request of this signer');
        return prior;
      }
      try {
        return req.messageType === MESSAGE_TYPE.PKCSReq ? await this.enroll(req, key, csr, log) : await this.renew(req, key, csr, log);
      } catch (e) {
        if (e instanceof Refusal) return e;
        throw e;
      }
    });
    if (outcome instanceof Refusal) {
      log.info({ failInfo: outcome.failInfo, detail: outcome.text }, 'SCEP request refused');
      return this.failure(req, outcome.failInfo, outcome.text);
    }
    return this.reply(req, (await this.waitFor(key, outcome))!);
  }

  /** Waits (up to scep.resultWait) while the transaction is pending; returns its latest state. */
  private async waitFor(key: string, rec: ScepTransactionRecord | undefined): Promise<ScepTransactionRecord | undefined> {
    if (!rec || rec.status !== 'pending') return rec;
    const ms = parseDuration(this.cfg.resultWait);
    if (ms > 0) {
      await new Promise<void>((resolve) => {
        const set = this.waiters.get(key) ?? new Set();
        this.waiters.set(key, set);
        const done = () => {
          clearTimeout(timer);
          set.delete(done);
          if (set.size === 0) this.waiters.delete(key);
          resolve();
        };
        const timer = setTimeout(done, ms);
        set.add(done);
      });
    }
    return (await this.store.transactions.get(key)) ?? rec;
  }

  private notify(key: string): void {
    for (const w of [...(this.waiters.get(key) ?? [])]) w();
  }

  /**
   * The names a device's CSR asks for. Every layer of the path judges them and the CSR here, as for an
   * ACME order at newOrder and finalize (shared/policy/edge.ts), so a device is refused at once; each
   * hop upstream judges its own layer again.
   */
  private names(csr: CsrInfo): Array<{ type: 'dns' | 'ip'; value: string }> {
    const names = csrNames(csr).map((n) => ({ type: n.type as 'dns' | 'ip', value: n.value }));
    if (names.length === 0) throw new Refusal('badRequest', 'the certificate request names nothing: give the device a DNS name or IP address as CN or subjectAltName');
    try {
      enforceOrderAtEdge({ path: this.d.layers }, names, { notBefore: null, notAfter: null });
      enforceCsrAtEdge({ path: this.d.layers }, csr);
    } catch (e) {
      throw new Refusal('badRequest', toRaError(e).detail);
    }
    return names;
  }

  /** PKCSReq: proof of possession (RFC 8894 §2.3) and the challenge password (§2.3, RFC 2985 §5.4.1). */
  private async enroll(req: PkiRequest, key: string, csr: CsrInfo, log: Logger): Promise<ScepTransactionRecord> {
    // The self-signed certificate that signed the request carries the key of the request.
    if (!req.signer.publicKey.equals(createPublicKey({ key: Buffer.from(csr.publicKeySpki), format: 'der', type: 'spki' }))) {
      throw new Refusal('badMessageCheck', 'the pkiMessage must be signed with the key of the certificate request');
    }
    const password = challengePassword(csr.der);
    if (password === undefined) throw new Refusal('badRequest', 'the certificate request carries no challengePassword');
    const names = this.names(csr);
    const now = Date.now();
    const at = new Date(now).toISOString();
    const go = (authorizedBy: string, extra: Parameters<ScepStore['db']['batch']>[0]) =>
      this.submit({
        req,
        key,
        csr,
        names,
        identifiers: names.map((n) => ({ ...n, validation: { method: 'scep-challenge' as const, at, from: authorizedBy } })),
        authorizedBy,
        kind: 'enroll',
        renewalOf: null,
        extra,
        log,
      });
    if (this.cfg.challengePasswordFile) {
      const secret = await this.segmentSecret();
      // Constant time: digests of equal length are compared.
      if (secret !== undefined && timingSafeEqual(createHash('sha256').update(secret).digest(), createHash('sha256').update(password).digest())) return go('segment', []);
    }
    if (this.cfg.oneTimePasswords) {
      // A one-time password is spent by exactly one transaction: looked up and written with it under one lock.
      const rec = await this.d.locks.run('scep-otp', async () => {
        const otp = await this.store.findOtp(password, now);
        if (!otp) return undefined;
        otp.record.usedAt = at;
        otp.record.usedBy = req.transactionId;
        return go(`otp:${otp.record.id}`, [{ coll: this.store.otps as never, type: 'put', key: otp.key, value: otp.record }]);
      });
      if (rec) return rec;
    }
    throw new Refusal('badRequest', 'the challenge password is wrong, or it is a one-time password that was used, revoked or has expired');
  }

  /** RenewalReq (RFC 8894 §3.3.1.2): signed with the certificate it renews, the same key, within the windows. */
  private async renew(req: PkiRequest, key: string, csr: CsrInfo, log: Logger): Promise<ScepTransactionRecord> {
    const old = await this.d.findCertificate(req.signer.der);
    if (!old || old.accountId !== scepAccountId(this.d.nodeId)) {
      throw new Refusal('badCertId', 'the certificate that signed this RenewalReq was not issued by SCEP at this edge');
    }
    return this.d.locks.run(`cert:${old.id}`, async () => {
      const cert = (await this.d.acme.certificates.get(old.id))!;
      if (cert.revocation) throw new Refusal('badRequest', 'the certificate to renew is revoked (or being revoked); enroll again with a challenge password');
      if (cert.replacedBy && cert.replacedBy !== `scep:${key}`) throw new Refusal('badRequest', 'the certificate was already renewed by another request');
      const facts = certificateFacts(leafDer(cert.chainPem));
      // The mesh renews with the old key only: the CSR carries the key of the certificate it renews.
      if (!Buffer.from(facts.spki).equals(Buffer.from(csr.publicKeySpki))) throw new Refusal('badRequest', 'a renewal keeps the key: the certificate request must carry the key of the certificate it renews');
      const names = this.names(csr);
      const held = new Set(facts.identifiers.map((i) => `${i.type}:${i.value}`));
      const foreign = names.filter((n) => !held.has(`${n.type}:${n.value}`));
      if (foreign.length > 0) throw new Refusal('badRequest', `a renewal may only name what the certificate holds; not in it: ${foreign.map((n) => n.value).join(', ')}`);
      const now = Date.now();
      if (now > facts.notAfter.getTime()) {
        // Expired: renewal by the old key only where the edge offers it (renewAfterExpiry) and within every layer's window.
        if (this.d.layers[0]!.policy.renewAfterExpiry === undefined) {
          throw new Refusal('badRequest', `the certificate expired at ${facts.notAfter.toISOString()} and this edge sets no renewAfterExpiry: enroll again with a challenge password`);
        }
        try {
          for (const layer of this.d.layers) layer.enforceRenewalWindow(facts.notAfter, now);
        } catch (e) {
          throw new Refusal('badRequest', toRaError(e).detail);
        }
      }
      const at = new Date(now).toISOString();
      const identifiers: EnvelopeIdentifier[] = names.map((n) => ({ ...n, validation: { method: 'renewal', at, from: `serial:${facts.serial}` } }));
      cert.replacedBy = `scep:${key}`;
      const extra: Parameters<ScepStore['db']['batch']>[0] = [{ coll: this.d.acme.certificates as never, type: 'put', key: cert.id, value: cert }];
      return this.submit({
        req,
        key,
        csr,
        names,
        identifiers,
        authorizedBy: `serial:${facts.serial}`,
        kind: 'renew',
        renewalOf: Buffer.from(leafDer(cert.chainPem)).toString('base64url'),
        extra,
        log,
      });
    });
  }

  /** The transaction, its envelope in the outbox (and what authorized it) in one batch; then up the mesh. */
  private async submit(s: {
    req: PkiRequest;
    key: string;
    csr: CsrInfo;
    names: Array<{ type: 'dns' | 'ip'; value: string }>;
    identifiers: EnvelopeIdentifier[];
    authorizedBy: string;
    kind: 'enroll' | 'renew';
    renewalOf: string | null;
    extra: Parameters<ScepStore['db']['batch']>[0];
    log: Logger;
  }): Promise<ScepTransactionRecord> {
    const now = Date.now();
    // Last, so a request refused above takes no token: the edge layer's rate limits (and what upstream
    // layers reported of theirs) for the edge's SCEP account, these names and this edge.
    try {
      admitOrderAtEdge({ path: this.d.layers }, { account: scepAccountId(this.d.nodeId), identifiers: s.names, edge: this.d.nodeId }, now);
    } catch (e) {
      throw new Refusal('badRequest', toRaError(e).detail);
    }
    const lifetime = parseDuration(this.cfg.pendingLifetime);
    const payload = newEdgePayload({
      origin: this.origin(),
      csr: Buffer.from(s.csr.der).toString('base64url'),
      identifiers: s.identifiers,
      // A SCEP device's "account" is its edge's SCEP account (validation-methods.ts); the thumbprint names its key.
      account: { id: scepAccountId(this.d.nodeId), eab: null, jwkThumbprint: sha256(s.csr.publicKeySpki) },
      requested: { notBefore: null, notAfter: null },
      renewalOf: s.renewalOf,
      ttlMs: Math.min(parseDuration(this.d.topology.config.envelope.ttl), lifetime),
      now,
    });
    const jws = await signEdgeEnvelope(payload, this.d.key);
    const rec: ScepTransactionRecord = {
      key: s.key,
      transactionId: s.req.transactionId,
      kind: s.kind,
      status: 'pending',
      envelopeId: payload.id,
      csrDigest: sha256(s.csr.der),
      signerCert: Buffer.from(s.req.signer.der).toString('base64'),
      cipher: s.req.cipher,
      names: s.names,
      authorizedBy: s.authorizedBy,
      createdAt: now,
      deadline: now + lifetime,
    };
    const out: ScepOutboxRecord = { envelopeId: payload.id, target: { kind: 'device', key: s.key }, jws, attempts: 1, nextAt: now + this.d.retransmitMs, createdAt: now, deadline: rec.deadline };
    await this.store.db.batch([
      ...s.extra,
      { coll: this.store.transactions as never, type: 'put', key: s.key, value: rec },
      { coll: this.store.byEnvelope as never, type: 'put', key: payload.id, value: s.key },
      { coll: this.store.outbox as never, type: 'put', key: payload.id, value: out },
    ]);
    this.due.note(payload.id, out);
    s.log.info({ envelopeId: payload.id, names: s.names.map((n) => n.value), authorizedBy: s.authorizedBy, kind: s.kind }, 'SCEP request queued');
    this.d.publish(payload.id, jws, 1);
    return rec;
  }

  private origin(): EdgePayload['origin'] {
    const node = this.d.topology.node(this.d.nodeId);
    return { node: this.d.nodeId, dc: node.dc, ...(node.segment ? { segment: node.segment } : {}) };
  }

  private async segmentSecret(): Promise<string | undefined> {
    try {
      const s = (await readFile(this.d.topology.resolvePath(this.cfg.challengePasswordFile!), 'utf8')).replace(/\r?\n$/, '');
      return s.length > 0 ? s : undefined;
    } catch (e) {
      this.d.log.error({ err: e, file: this.cfg.challengePasswordFile }, 'scep.challengePasswordFile is not readable: no device is enrolled by the segment password');
      return undefined;
    }
  }

  // -------------------------------------------------------------------------------------------
  // The RA certificate

  /** Asks the mesh CA for an RA certificate when there is none, or the current one is two thirds through its life. */
  private async ensureRaCertificate(now: number): Promise<void> {
    if (now < this.raRetryAt || !(await this.ra.due(now))) return;
    const { record, csrDer, spkiThumbprint } = await this.ra.newRequest();
    const lifetime = parseDuration(this.cfg.pendingLifetime);
    const payload = newEdgePayload({
      origin: this.origin(),
      csr: Buffer.from(csrDer).toString('base64url'),
      identifiers: [{ type: 'dns', value: this.cfg.raName, validation: { method: 'scep-ra', at: new Date(now).toISOString(), from: `node:${this.d.nodeId}` } }],
      account: { id: scepRaAccountId(this.d.nodeId), eab: null, jwkThumbprint: spkiThumbprint },
      requested: { notBefore: null, notAfter: new Date(now + this.raLifetimeMs()).toISOString() },
      renewalOf: null,
      ttlMs: Math.min(parseDuration(this.d.topology.config.envelope.ttl), lifetime),
      now,
    });
    const jws = await signEdgeEnvelope(payload, this.d.key);
    record.envelopeId = payload.id;
    const out: ScepOutboxRecord = { envelopeId: payload.id, target: { kind: 'ra' }, jws, attempts: 1, nextAt: now + this.d.retransmitMs, createdAt: now, deadline: now + lifetime };
    await this.store.db.batch([
      { coll: this.store.ra as never, type: 'put', key: 'next', value: record },
      { coll: this.store.outbox as never, type: 'put', key: payload.id, value: out },
    ]);
    this.due.note(payload.id, out);
    this.d.log.info({ envelopeId: payload.id, raName: this.cfg.raName }, 'SCEP RA certificate requested from the mesh CA');
    this.d.publish(payload.id, jws, 1);
  }

  /** scep.raLifetime, within every layer's maxLifetime (a requested validity beyond one is refused, RFC 8555 §7.4). */
  private raLifetimeMs(): number {
    let ms = parseDuration(this.cfg.raLifetime);
    for (const l of this.d.layers) if (l.policy.maxLifetime) ms = Math.min(ms, parseDuration(l.policy.maxLifetime));
    return ms;
  }

  // -------------------------------------------------------------------------------------------
  // Results and the outbox

  /** A verified result from the mesh: handled when it answers a SCEP envelope (returns false otherwise). */
  async onResult(result: ResultPayload): Promise<boolean> {
    const out = await this.store.outbox.get(result.id);
    if (out?.target.kind === 'ra') {
      await this.onRaResult(result);
      return true;
    }
    const key = await this.store.byEnvelope.get(result.id);
    if (!key) return false;
    const log = this.d.log.child({ envelopeId: result.id });
    await this.d.locks.run(`scep:${key}`, async () => {
      const rec = await this.store.transactions.get(key);
      if (!rec || rec.envelopeId !== result.id) {
        await this.store.outbox.del(result.id);
        return log.debug('result for a replaced SCEP transaction dropped');
      }
      if (rec.status !== 'pending') {
        if (rec.status === 'failed' && result.status === 'valid' && result.certificate && !rec.serial) await this.revokeLate(rec, result.certificate, log);
        await this.store.outbox.del(result.id);
        return log.debug('duplicate SCEP result ignored');
      }
      const total = Date.now() - rec.createdAt;
      if (result.status === 'valid' && result.certificate) {
        const serial = leafSerial(result.certificate);
        const done: ScepTransactionRecord = { ...rec, status: 'issued', chainPem: result.certificate, serial, updatedAt: Date.now() };
        // Also a certificate of the edge store: revocable through ACME revokeCert (by its key), renewable by RenewalReq.
        const cert: CertificateRecord = {
          id: `scep-${rec.envelopeId}`,
          orderId: `scep:${key}`,
          accountId: scepAccountId(this.d.nodeId),
          chainPem: result.certificate,
          issuedAt: new Date().toISOString(),
          serial,
          identifiers: rec.names,
        };
        await this.store.db.batch([
          { coll: this.store.transactions as never, type: 'put', key, value: done },
          { coll: this.d.acme.certificates as never, type: 'put', key: cert.id, value: cert },
          { coll: this.d.acme.certBySerial as never, type: 'put', key: serial, value: cert.id },
          { coll: this.store.outbox as never, type: 'del', key: result.id },
        ]);
        this.d.metrics?.issuance('valid', total);
        log.info({ transactionId: rec.transactionId, serial, totalMs: total }, 'SCEP certificate received');
      } else {
        const detail = result.problem?.detail ?? 'the mesh refused the request';
        // An upstream layer's rate limit: the edge refuses this account/names/edge early until it refills.
        noteUpstreamRefusal({ path: this.d.layers }, { account: scepAccountId(this.d.nodeId), identifiers: rec.names, edge: this.d.nodeId }, result.problem);
        await this.fail(rec, 'badRequest', `refused by ${result.gateway.node}: ${detail}`, [{ coll: this.store.outbox as never, type: 'del', key: result.id }]);
        this.d.metrics?.issuance('invalid', total);
        log.info({ transactionId: rec.transactionId, problem: result.problem?.type, detail, by: result.gateway.node }, 'SCEP request refused upstream');
      }
      this.notify(key);
    });
    return true;
  }

  /** A transaction fails: what authorized it is freed again (a one-time password, the renewed certificate). */
  private async fail(rec: ScepTransactionRecord, failInfo: FailInfo, text: string, ops: Parameters<ScepStore['db']['batch']>[0]): Promise<void> {
    const failed: ScepTransactionRecord = { ...rec, status: 'failed', failInfo, failText: text, updatedAt: Date.now() };
    const more: Parameters<ScepStore['db']['batch']>[0] = [];
    if (rec.authorizedBy.startsWith('otp:')) {
      for await (const [k, o] of this.store.otps.entries()) {
        if (o.id === rec.authorizedBy.slice(4) && o.usedBy === rec.transactionId && !o.revokedAt) {
          delete o.usedAt;
          delete o.usedBy;
          more.push({ coll: this.store.otps as never, type: 'put', key: k, value: o });
        }
      }
    }
    if (rec.kind === 'renew') {
      for await (const [k, c] of this.d.acme.certificates.entries()) {
        if (c.replacedBy === `scep:${rec.key}`) {
          delete c.replacedBy;
          more.push({ coll: this.d.acme.certificates as never, type: 'put', key: k, value: c });
        }
      }
    }
    await this.store.db.batch([...ops, ...more, { coll: this.store.transactions as never, type: 'put', key: rec.key, value: failed }]);
  }

  private async revokeLate(rec: ScepTransactionRecord, chainPem: string, log: Logger): Promise<void> {
    const serial = leafSerial(chainPem);
    if (await this.d.acme.certBySerial.get(serial)) return;
    const cert: CertificateRecord = {
      id: `scep-late-${rec.envelopeId}`,
      orderId: `scep:${rec.key}`,
      accountId: scepAccountId(this.d.nodeId),
      chainPem,
      issuedAt: new Date().toISOString(),
      serial,
      identifiers: rec.names,
    };
    await this.d.acme.db.batch([
      { coll: this.d.acme.certificates as never, type: 'put', key: cert.id, value: cert },
      { coll: this.d.acme.certBySerial as never, type: 'put', key: serial, value: cert.id },
    ]);
    log.warn({ transactionId: rec.transactionId, serial }, 'SCEP certificate arrived after its request expired: revoking it');
    await this.d.revokeLate(cert, sha256(certificateFacts(leafDer(chainPem)).spki));
  }

  private async onRaResult(result: ResultPayload): Promise<void> {
    const log = this.d.log.child({ envelopeId: result.id });
    await this.d.locks.run('scep-ra', async () => {
      if (result.status === 'valid' && result.certificate && (await this.ra.issued(result.id, result.certificate))) {
        log.info({ serial: leafSerial(result.certificate), notAfter: this.ra.current?.notAfter.toISOString() }, 'SCEP RA certificate received from the mesh CA');
      } else if (result.status === 'valid') {
        log.error('the RA certificate from the mesh does not certify the requested key; it is not used');
        await this.ra.dropRequest(result.id);
        this.raRetryAt = Date.now() + RA_RETRY_MS;
      } else {
        log.error({ problem: result.problem?.type, detail: result.problem?.detail, by: result.gateway.node }, `the mesh refused the SCEP RA certificate for ${this.cfg.raName}; asking again in ${RA_RETRY_MS / 60_000} minutes`);
        await this.ra.dropRequest(result.id);
        this.raRetryAt = Date.now() + RA_RETRY_MS;
      }
      await this.store.outbox.del(result.id);
    });
  }

  /** Retransmits unanswered SCEP envelopes, fails those past their deadline, renews the RA certificate in time. */
  async sweep(now: number): Promise<void> {
    const skew = clockSkewMs(this.d.topology);
    const ttlMs = parseDuration(this.d.topology.config.envelope.ttl);
    for await (const [id, out] of this.due.due(now, (id) => this.store.outbox.get(id))) {
      // The envelope never outlives the deadline, and nodes accept it at most clockSkew after exp.
      if (now > out.deadline + skew) {
        this.due.drop(id);
        if (out.target.kind === 'ra') {
          await this.d.locks.run('scep-ra', async () => {
            await this.ra.dropRequest(id);
            await this.store.outbox.del(id);
          });
          this.d.log.error({ envelopeId: id }, 'no answer to the SCEP RA certificate request; asking again');
          continue;
        }
        const key = out.target.key;
        await this.d.locks.run(`scep:${key}`, async () => {
          const rec = await this.store.transactions.get(key);
          const del = [{ coll: this.store.outbox as never, type: 'del' as const, key: id }];
          if (rec && rec.status === 'pending' && rec.envelopeId === id) {
            await this.fail(rec, 'badRequest', `no answer from the CA within ${this.cfg.pendingLifetime} (scep.pendingLifetime): nothing was issued; send a new request`, del);
            this.notify(key);
          } else {
            await this.store.db.batch(del);
          }
        });
        this.d.log.warn({ envelopeId: id }, 'SCEP request expired waiting for the mesh');
        continue;
      }
      if (out.nextAt > now) {
        this.due.note(id, out);
        continue;
      }
      out.attempts += 1;
      // The outbound stream holds the envelope durably; this is the end-to-end safety net (a result
      // lost on its way down, an envelope expired during a long outage): back off to once per lifetime.
      out.nextAt = now + Math.min(Math.max(60_000, ttlMs), this.d.retransmitMs * 2 ** Math.min(out.attempts - 1, 10));
      out.jws = await this.refreshed(out.jws, now, out.deadline);
      await this.store.outbox.put(id, out);
      this.due.note(id, out);
      this.d.log.info({ envelopeId: id, attempt: out.attempts }, 'retransmitting SCEP envelope');
      this.d.publish(id, out.jws, out.attempts);
    }
    await this.d.locks.run('scep-ra', () => this.ensureRaCertificate(now));
    await this.pruneIfDue(now);
  }

  /** Finished transactions are kept acme.retention (a device polling late still gets its answer), then removed. */
  private async pruneIfDue(now: number): Promise<void> {
    const retentionMs = parseDuration(this.d.topology.acme(this.d.nodeId).retention);
    if (now - this.lastPruneAt < Math.min(PRUNE_INTERVAL_MS, retentionMs)) return;
    this.lastPruneAt = now;
    let removed = 0;
    for await (const [key, t] of this.store.transactions.entries()) {
      if (t.status === 'pending' || (t.updatedAt ?? t.createdAt) + retentionMs > now) continue;
      await this.d.locks.run(`scep:${key}`, async () => {
        const cur = await this.store.transactions.get(key);
        if (!cur || cur.status === 'pending' || (cur.updatedAt ?? cur.createdAt) + retentionMs > now) return;
        await this.store.db.batch([
          { coll: this.store.transactions as never, type: 'del', key },
          { coll: this.store.byEnvelope as never, type: 'del', key: cur.envelopeId },
        ]);
        removed++;
      });
    }
    if (removed > 0) this.d.log.info({ removed }, 'pruned finished SCEP transactions');
  }

  /** Re-signed with the same id and content (fresh iat/exp/nonce) when it nears exp, never past the deadline. */
  private async refreshed(jws: string, now: number, deadline: number): Promise<string> {
    const payload = JSON.parse(Buffer.from(jws.split('.')[1]!, 'base64url').toString('utf8')) as EdgePayload;
    const ttlMs = Math.min(parseDuration(this.d.topology.config.envelope.ttl), deadline - now);
    if (payload.exp * 1000 - now > Math.min(ttlMs / 2, 60_000) || ttlMs < 2000) return jws;
    return signEdgeEnvelope(newEdgePayload({ ...payload, id: payload.id, ttlMs, now }), this.d.key);
  }
}

/** The PKCS #9 challengePassword attribute of a CSR (RFC 2985 §5.4.1), if any. */
export function challengePassword(csrDer: Uint8Array): string | undefined {
  const csr = new x509.Pkcs10CertificateRequest(csrDer);
  const attr = csr.getAttribute('1.2.840.113549.1.9.7');
  if (!attr) return undefined;
  const pw = new x509.ChallengePasswordAttribute(attr.rawData).password;
  return pw.length > 0 ? pw : undefined;
}

/** The RA certificate as PEM (for operators: `ra-mesh up` prints where devices find it). */
export function raCertificatePem(scep: EdgeScep): string | undefined {
  const ra = scep.ra.current;
  return ra ? derToPem(ra.cert, 'CERTIFICATE') : undefined;
}
