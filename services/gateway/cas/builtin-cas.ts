import { join } from 'node:path';
import { BuiltinCa } from '../../../shared/pki/index.js';
import type { Logger } from '../../../shared/logging/logger.js';
import type { Collection, KeyedLock, NodeStore } from '../../../shared/store/index.js';
import type { CertificateAuthorityService, CreateCertificateRequest, CreateCertificateResponse } from './cas.js';

/** What the builtin CA keeps of every certificate it signed, keyed by the request id (the envelope id). */
interface IssuedRecord {
  requestId: string;
  serial: string;
  chainPem: string;
  notAfter: string;
  at: number;
}

/**
 * The embedded default CA: root + intermediate created on first start and kept in the gateway's store.
 * Idempotent on requestId like Google CAS: a request id it has signed for returns the stored
 * certificate, never a second one, even across a crash of the gateway between this call and the
 * result being stored and sent.
 */
export class BuiltinCas implements CertificateAuthorityService {
  readonly type = 'builtin';
  private readonly issued: Collection<IssuedRecord>;

  private constructor(
    readonly ca: BuiltinCa,
    db: NodeStore,
    private readonly locks: KeyedLock,
  ) {
    this.issued = db.collection('cas-builtin-issued');
  }

  static async create(storeDir: string, meshName: string, db: NodeStore, locks: KeyedLock, log?: Logger): Promise<BuiltinCas> {
    return new BuiltinCas(await BuiltinCa.loadOrCreate(join(storeDir, 'ca'), { name: meshName, ...(log ? { log } : {}) }), db, locks);
  }

  async createCertificate(req: CreateCertificateRequest): Promise<CreateCertificateResponse> {
    return this.locks.run(`cas:${req.requestId}`, async () => {
      const prior = await this.issued.get(req.requestId);
      if (prior) return { chainPem: prior.chainPem, serial: prior.serial, notAfter: new Date(prior.notAfter) };
      const signed = await this.ca.sign({
        csrDer: req.csrDer,
        dnsNames: req.dnsNames,
        ipAddresses: req.ipAddresses,
        lifetimeMs: req.lifetimeMs,
        ...(req.notBefore ? { notBefore: req.notBefore } : {}),
      });
      // Recorded before the certificate leaves this call: what was handed out is always on record.
      await this.issued.put(req.requestId, {
        requestId: req.requestId,
        serial: signed.serial,
        chainPem: signed.chainPem,
        notAfter: signed.notAfter.toISOString(),
        at: Date.now(),
      });
      return { chainPem: signed.chainPem, serial: signed.serial, notAfter: signed.notAfter };
    });
  }

  /** Every certificate this CA has issued (request id and serial), oldest key first. */
  async *issuedCertificates(): AsyncGenerator<{ requestId: string; serial: string; notAfter: string }> {
    for await (const [, r] of this.issued.entries()) yield { requestId: r.requestId, serial: r.serial, notAfter: r.notAfter };
  }

  async rootsPem(): Promise<string> {
    return this.ca.rootPem();
  }
}
