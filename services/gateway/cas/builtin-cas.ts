import { join } from 'node:path';
import type { CrlReason } from '../../../shared/envelope/index.js';
import { RaError } from '../../../shared/errors/index.js';
import { BuiltinCa } from '../../../shared/pki/index.js';
import type { Logger } from '../../../shared/logging/logger.js';
import type { Collection, KeyedLock, NodeStore } from '../../../shared/store/index.js';
import type {
  CertificateAuthorityService,
  CreateCertificateRequest,
  CreateCertificateResponse,
  CrlCapable,
  CrlInfo,
  RevokeCertificateRequest,
  RevokeCertificateResponse,
} from './cas.js';

/** What the builtin CA keeps of every certificate it signed, keyed by the request id (the envelope id). */
interface IssuedRecord {
  requestId: string;
  serial: string;
  chainPem: string;
  notAfter: string;
  at: number;
}

/** A revoked serial, kept for the CRL (RFC 5280 §5.1.2.6). */
interface RevokedRecord {
  serial: string;
  reason: CrlReason;
  revokedAt: string;
  /** The revoke envelope id. */
  requestId: string;
}

/** The CRL last signed: its number only ever grows. */
interface CrlState {
  number: number;
  thisUpdate: string;
  nextUpdate: string;
  /** base64 DER. */
  der: string;
}

export interface BuiltinCasOptions {
  /** URL put in a CRL Distribution Points extension of every certificate (none when unset). */
  crlUrl?: string;
  /** nextUpdate - thisUpdate of each CRL; re-signed after half of it. Default 7 days. */
  crlValidityMs?: number;
}

const DEFAULT_CRL_VALIDITY_MS = 7 * 86_400_000;
const CRL_LOCK = 'cas-builtin-crl';

/**
 * The embedded default CA: root + intermediate created on first start and kept in the gateway's store.
 * Idempotent on requestId like Google CAS: a request id it has signed for returns the stored
 * certificate, never a second one, even across a crash of the gateway between this call and the
 * result being stored and sent. Revocations are kept in the same store and published as a CRL
 * signed by the intermediate.
 */
export class BuiltinCas implements CertificateAuthorityService, CrlCapable {
  readonly type = 'builtin';
  readonly idempotent = true;
  private readonly issued: Collection<IssuedRecord>;
  private readonly bySerial: Collection<string>;
  private readonly revoked: Collection<RevokedRecord>;
  private readonly crlState: Collection<CrlState>;
  private readonly crlValidityMs: number;

  private constructor(
    readonly ca: BuiltinCa,
    private readonly db: NodeStore,
    private readonly locks: KeyedLock,
    private readonly opts: BuiltinCasOptions,
  ) {
    this.issued = db.collection('cas-builtin-issued');
    this.bySerial = db.collection('cas-builtin-serial');
    this.revoked = db.collection('cas-builtin-revoked');
    this.crlState = db.collection('cas-builtin-crl');
    this.crlValidityMs = opts.crlValidityMs ?? DEFAULT_CRL_VALIDITY_MS;
  }

  static async create(storeDir: string, meshName: string, db: NodeStore, locks: KeyedLock, log?: Logger, opts: BuiltinCasOptions = {}): Promise<BuiltinCas> {
    return new BuiltinCas(await BuiltinCa.loadOrCreate(join(storeDir, 'ca'), { name: meshName, ...(log ? { log } : {}) }), db, locks, opts);
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
        ...(this.opts.crlUrl ? { crlUrl: this.opts.crlUrl } : {}),
      });
      // Recorded before the certificate leaves this call: what was handed out is always on record.
      await this.db.batch([
        {
          coll: this.issued as never,
          type: 'put',
          key: req.requestId,
          value: { requestId: req.requestId, serial: signed.serial, chainPem: signed.chainPem, notAfter: signed.notAfter.toISOString(), at: Date.now() },
        },
        { coll: this.bySerial as never, type: 'put', key: signed.serial, value: req.requestId },
      ]);
      return { chainPem: signed.chainPem, serial: signed.serial, notAfter: signed.notAfter };
    });
  }

  async revokeCertificate(req: RevokeCertificateRequest): Promise<RevokeCertificateResponse> {
    return this.locks.run(CRL_LOCK, async () => {
      if (!(await this.issuedSerial(req.serial))) throw new RaError('malformed', { detail: `serial ${req.serial} was not issued by this CA` });
      const prior = await this.revoked.get(req.serial);
      if (prior) {
        // The same request again (a redelivery after a crash): the first answer, nothing changes.
        if (prior.requestId === req.requestId) return { serial: prior.serial, reason: prior.reason, revokedAt: new Date(prior.revokedAt) };
        throw new RaError('alreadyRevoked', { detail: `the certificate ${req.serial} was revoked at ${prior.revokedAt}` });
      }
      const rec: RevokedRecord = { serial: req.serial, reason: req.reason, revokedAt: new Date().toISOString(), requestId: req.requestId };
      // The revocation and the CRL that lists it are stored together: never one without the other.
      const crl = await this.nextCrl([rec]);
      await this.db.batch([
        { coll: this.revoked as never, type: 'put', key: rec.serial, value: rec },
        { coll: this.crlState as never, type: 'put', key: 'current', value: crl },
      ]);
      return { serial: rec.serial, reason: rec.reason, revokedAt: new Date(rec.revokedAt) };
    });
  }

  async currentCrl(): Promise<CrlInfo> {
    return this.locks.run(CRL_LOCK, async () => {
      let state = await this.crlState.get('current');
      const now = Date.now();
      // RFC 5280 §5.1.2.5: a new CRL is issued before nextUpdate; here after half the validity.
      if (!state || Date.parse(state.thisUpdate) + this.crlValidityMs / 2 <= now || Date.parse(state.nextUpdate) <= now) {
        state = await this.nextCrl([]);
        await this.crlState.put('current', state);
      }
      return { der: new Uint8Array(Buffer.from(state.der, 'base64')), number: state.number, thisUpdate: new Date(state.thisUpdate), nextUpdate: new Date(state.nextUpdate) };
    });
  }

  /** Whether this CA issued `serial` (the index, else a scan for records made before the index existed). */
  private async issuedSerial(serial: string): Promise<boolean> {
    if (await this.bySerial.get(serial)) return true;
    for await (const [, r] of this.issued.entries()) if (r.serial === serial) return true;
    return false;
  }

  /** Every revoked serial with its reason and time. */
  async revokedCertificates(): Promise<Array<{ serial: string; reason: CrlReason; revokedAt: string }>> {
    return (await this.revoked.values()).map(({ serial, reason, revokedAt }) => ({ serial, reason, revokedAt }));
  }

  /** Signs the next CRL: every stored revocation plus `extra` (not yet stored). Call under CRL_LOCK. */
  private async nextCrl(extra: RevokedRecord[]): Promise<CrlState> {
    const prior = await this.crlState.get('current');
    const number = (prior?.number ?? 0) + 1;
    const thisUpdate = new Date();
    const nextUpdate = new Date(thisUpdate.getTime() + this.crlValidityMs);
    const entries = [...(await this.revoked.values()), ...extra].map((r) => ({ serial: r.serial, reason: r.reason, revokedAt: new Date(r.revokedAt) }));
    const der = await this.ca.signCrl({ number, thisUpdate, nextUpdate, entries });
    return { number, thisUpdate: thisUpdate.toISOString(), nextUpdate: nextUpdate.toISOString(), der: Buffer.from(der).toString('base64') };
  }

  /** Every certificate this CA has issued (request id and serial), oldest key first. */
  async *issuedCertificates(): AsyncGenerator<{ requestId: string; serial: string; notAfter: string }> {
    for await (const [, r] of this.issued.entries()) yield { requestId: r.requestId, serial: r.serial, notAfter: r.notAfter };
  }

  async rootsPem(): Promise<string> {
    return this.ca.rootPem();
  }
}
