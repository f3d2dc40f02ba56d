import { parseDuration, type Topology } from '../../shared/config/index.js';
import { newRevokePayload, signEdgeEnvelope, type NodeKey, type ResultPayload, type RevokePayload } from '../../shared/envelope/index.js';
import { RaError, type ProblemDocument } from '../../shared/errors/index.js';
import { leafSerial, normalizeSerial, pemToDer, x509 } from '../../shared/pki/index.js';
import type { KeyedLock } from '../../shared/store/index.js';
import type { RevocationRequest } from './acme/context.js';
import type { AcmeStore, CertificateRecord, RevocationOutboxRecord } from './acme/records.js';
import { DueIndex } from './due-index.js';
import type { Logger } from './logger.js';

type Outcome = { ok: true } | { ok: false; problem: ProblemDocument };

/**
 * Revocations of an edge (RFC 8555 §7.6 through the mesh): a revoke envelope is stored in the
 * revocation outbox together with the certificate's "pending" state, published to the parent,
 * retransmitted (same id) until the gateway's answer arrives, and the ACME request waits for that
 * answer for at most `acme.revokeWait`.
 */
export class EdgeRevocations {
  private readonly waiters = new Map<string, Set<(o: Outcome) => void>>();

  /** When each outbox revocation next needs the sweep (its retransmit; giving up is checked then too). */
  private readonly due = new DueIndex<RevocationOutboxRecord>((out) => out.nextAt);

  constructor(
    private readonly nodeId: string,
    private readonly topology: Topology,
    private readonly store: AcmeStore,
    private readonly key: NodeKey,
    private readonly locks: KeyedLock,
    private readonly log: Logger,
    private readonly publish: (envelopeId: string, jws: string, attempt: number) => void,
    private readonly retransmitMs: number,
  ) {}

  /** Reads when each waiting revocation is next due (once, at start; every outbox write keeps it after that). */
  async load(): Promise<void> {
    await this.due.load(this.store.revokeOutbox.entries());
  }

  /** Finds a certificate this edge received, by its DER: the serial index, else a scan of older records. */
  async findByDer(der: Uint8Array): Promise<CertificateRecord | undefined> {
    const same = (c: CertificateRecord) => Buffer.from(pemToDer(c.chainPem, 'CERTIFICATE')[0] ?? []).equals(der);
    let serial: string;
    try {
      serial = normalizeSerial(new x509.X509Certificate(der).serialNumber);
    } catch {
      return undefined;
    }
    const id = await this.store.certBySerial.get(serial);
    if (id) {
      const c = await this.store.certificates.get(id);
      // The whole DER must match: a certificate made up with a known serial is not ours.
      return c && same(c) ? c : undefined;
    }
    for await (const [, c] of this.store.certificates.entries()) if (!c.serial && same(c)) return c;
    return undefined;
  }

  /**
   * Queues the revocation (or joins the one already pending for the certificate) and waits up to
   * `waitMs` for the answer. Throws the CA's problem when it refused.
   *
   * RFC 8555 §7.6 has no asynchronous answer for revokeCert (200 means revoked). When the mesh does
   * not answer within `waitMs` (uplink down, CA slow) the client gets serverInternal with a detail
   * saying so, while the envelope stays in the outbox and the revocation still completes later; a
   * retry joins the pending revocation (no second envelope) and, once it is done, gets alreadyRevoked.
   */
  async request(req: RevocationRequest, waitMs: number): Promise<void> {
    const envelopeId = await this.enqueue(req);
    const outcome = await this.wait(envelopeId, waitMs);
    if (outcome === undefined) {
      throw new RaError('serverInternal', {
        detail:
          `the revocation was accepted and sent to the CA, but its answer did not arrive within ${Math.round(waitMs / 1000)} s; ` +
          'it stays queued and completes without further action (a later request answers alreadyRevoked once it is done)',
      });
    }
    if (!outcome.ok) throw RaError.fromProblem(outcome.problem);
  }

  /**
   * Stores the revocation in the outbox with the certificate's pending state and publishes it (or
   * returns the pending one's envelope id). Throws alreadyRevoked for a revoked certificate.
   */
  async enqueue(req: RevocationRequest): Promise<string> {
    const certId = req.certificate.id;
    return this.locks.run(`cert:${certId}`, async () => {
      const cert = (await this.store.certificates.get(certId))!;
      // RFC 8555 §7.6: a certificate revoked before is alreadyRevoked.
      if (cert.revocation?.status === 'revoked') throw new RaError('alreadyRevoked', { detail: `the certificate was revoked at ${cert.revocation.revokedAt}` });
      if (cert.revocation?.status === 'pending') return cert.revocation.envelopeId;
      const serial = cert.serial ?? leafSerial(cert.chainPem);
      const node = this.topology.node(this.nodeId);
      const payload = newRevokePayload({
        origin: { node: this.nodeId, dc: node.dc, ...(node.segment ? { segment: node.segment } : {}) },
        serial,
        reason: req.reason,
        requester: req.requester,
        ttlMs: parseDuration(this.topology.config.envelope.ttl),
      });
      const jws = await signEdgeEnvelope(payload, this.key);
      const now = Date.now();
      cert.serial = serial;
      cert.revocation = { status: 'pending', envelopeId: payload.id, reason: req.reason, requestedAt: new Date(now).toISOString() };
      const out: RevocationOutboxRecord = { envelopeId: payload.id, certificateId: certId, serial, jws, attempts: 1, nextAt: now + this.retransmitMs, createdAt: now };
      await this.store.db.batch([
        { coll: this.store.certificates as never, type: 'put', key: certId, value: cert },
        { coll: this.store.certBySerial as never, type: 'put', key: serial, value: certId },
        { coll: this.store.revokeOutbox as never, type: 'put', key: payload.id, value: out },
      ]);
      this.due.note(payload.id, out);
      this.log.info({ envelopeId: payload.id, serial, reason: req.reason, by: req.requester.method }, 'revocation queued');
      this.publish(payload.id, jws, 1);
      return payload.id;
    });
  }

  private wait(envelopeId: string, ms: number): Promise<Outcome | undefined> {
    return new Promise((resolve) => {
      const set = this.waiters.get(envelopeId) ?? new Set();
      this.waiters.set(envelopeId, set);
      const done = (o: Outcome | undefined) => {
        clearTimeout(timer);
        set.delete(done);
        if (set.size === 0) this.waiters.delete(envelopeId);
        resolve(o);
      };
      const timer = setTimeout(() => done(undefined), ms);
      set.add(done);
      // The answer may have arrived between queueing and waiting: check the store once.
      void this.settled(envelopeId).then((o) => o && done(o));
    });
  }

  /** The outcome of a revocation whose answer is already stored (none while it is pending). */
  private async settled(envelopeId: string): Promise<Outcome | undefined> {
    const out = await this.store.revokeOutbox.get(envelopeId);
    if (out) return undefined;
    return this.lastOutcome.get(envelopeId);
  }

  /** Outcomes of recent answers, for a waiter that registered just after the answer came. */
  private readonly lastOutcome = new Map<string, Outcome>();

  private settle(envelopeId: string, o: Outcome): void {
    this.lastOutcome.set(envelopeId, o);
    if (this.lastOutcome.size > 1000) this.lastOutcome.delete(this.lastOutcome.keys().next().value!);
    for (const w of [...(this.waiters.get(envelopeId) ?? [])]) w(o);
  }

  /** A verified result with kind 'revoke': records the outcome on the certificate, clears the outbox, wakes waiters. */
  async onResult(result: ResultPayload): Promise<void> {
    const log = this.log.child({ envelopeId: result.id });
    const out = await this.store.revokeOutbox.get(result.id);
    if (!out) return log.debug('duplicate or unknown revocation answer ignored');
    await this.locks.run(`cert:${out.certificateId}`, async () => {
      const cert = await this.store.certificates.get(out.certificateId);
      if (!cert || cert.revocation?.envelopeId !== result.id || !(await this.store.revokeOutbox.get(result.id))) return;
      let outcome: Outcome;
      const already = result.problem?.type === 'urn:ietf:params:acme:error:alreadyRevoked';
      if (result.status === 'valid' && result.revocation) {
        cert.revocation = { ...cert.revocation, status: 'revoked', reason: result.revocation.reason, revokedAt: result.revocation.revokedAt };
        outcome = { ok: true };
        log.info({ serial: out.serial, reason: result.revocation.reason }, 'certificate revoked');
      } else if (already) {
        // Revoked at the CA already (e.g. this edge lost its record of it): the certificate is revoked.
        cert.revocation = { ...cert.revocation, status: 'revoked', revokedAt: cert.revocation.revokedAt ?? new Date().toISOString() };
        outcome = { ok: false, problem: result.problem! };
      } else {
        delete cert.revocation;
        outcome = { ok: false, problem: result.problem ?? new RaError('serverInternal', { detail: 'the mesh refused the revocation' }).toProblem() };
        log.info({ serial: out.serial, problem: outcome.problem.type, detail: outcome.problem.detail }, 'revocation refused upstream');
      }
      await this.store.db.batch([
        { coll: this.store.certificates as never, type: 'put', key: cert.id, value: cert },
        { coll: this.store.revokeOutbox as never, type: 'del', key: result.id },
      ]);
      this.settle(result.id, outcome);
    });
  }

  /** Retransmits unanswered revocations (re-signed near expiry, same id and content); gives up after `giveUpMs`. */
  async sweep(now: number, giveUpMs: number): Promise<void> {
    for await (const [id, out] of this.due.due(now, (id) => this.store.revokeOutbox.get(id))) {
      if (out.nextAt > now) {
        this.due.note(id, out);
        continue;
      }
      if (now - out.createdAt > giveUpMs) {
        this.due.drop(id);
        await this.locks.run(`cert:${out.certificateId}`, async () => {
          const cert = await this.store.certificates.get(out.certificateId);
          if (cert?.revocation?.envelopeId === id && cert.revocation.status === 'pending') delete cert.revocation;
          await this.store.db.batch([
            ...(cert ? [{ coll: this.store.certificates as never, type: 'put' as const, key: cert.id, value: cert }] : []),
            { coll: this.store.revokeOutbox as never, type: 'del', key: id },
          ]);
        });
        this.log.warn({ envelopeId: id, serial: out.serial }, 'revocation abandoned: no answer from the CA');
        continue;
      }
      out.attempts += 1;
      out.nextAt = now + Math.min(60_000, this.retransmitMs * 2 ** Math.min(out.attempts - 1, 10));
      out.jws = await this.refreshed(out.jws, now);
      await this.store.revokeOutbox.put(id, out);
      this.due.note(id, out);
      this.log.info({ envelopeId: id, attempt: out.attempts }, 'retransmitting revocation');
      this.publish(id, out.jws, out.attempts);
    }
  }

  private async refreshed(jws: string, now: number): Promise<string> {
    const payload = JSON.parse(Buffer.from(jws.split('.')[1]!, 'base64url').toString('utf8')) as RevokePayload;
    const ttlMs = parseDuration(this.topology.config.envelope.ttl);
    if (payload.exp * 1000 - now > Math.min(ttlMs / 2, 60_000)) return jws;
    return signEdgeEnvelope(newRevokePayload({ ...payload, id: payload.id, ttlMs, now }), this.key);
  }
}
