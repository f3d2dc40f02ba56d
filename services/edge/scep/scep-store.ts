import { createHash, randomBytes } from 'node:crypto';
import { RaError } from '../../../shared/errors/index.js';
import type { Collection, NodeStore } from '../../../shared/store/index.js';
import type { FailInfo } from './messages.js';

// What the edge keeps of SCEP in its level store, next to the ACME collections: one record per SCEP
// transaction (transactionID and the certificate that signed the request -> state), the SCEP outbox
// (signed envelopes waiting for their result), the RA key and certificates, and one-time passwords.

export type ScepTransactionStatus = 'pending' | 'issued' | 'failed';

export interface ScepTransactionRecord {
  /** transactionKey(transactionID, signer certificate). */
  key: string;
  transactionId: string;
  kind: 'enroll' | 'renew';
  status: ScepTransactionStatus;
  envelopeId: string;
  /** SHA-256 (base64url) of the request's PKCS #10 DER: a repeated request must be the same one. */
  csrDigest: string;
  /** base64 DER of the certificate that signed the request: the reply is encrypted for it. */
  signerCert: string;
  /** Content encryption the device used (its replies are encrypted alike, never with single DES). */
  cipher: string;
  names: Array<{ type: 'dns' | 'ip'; value: string }>;
  /** 'segment', 'otp:<id>' (challenge password) or 'serial:<hex>' (renewal by that certificate). */
  authorizedBy: string;
  createdAt: number;
  /** After this the request fails and nothing may be issued for it (scep.pendingLifetime). */
  deadline: number;
  updatedAt?: number;
  /** issued: the certificate chain (leaf first), its serial. */
  chainPem?: string;
  serial?: string;
  /** failed: why (RFC 8894 failInfo, and a sentence for failInfoText). */
  failInfo?: FailInfo;
  failText?: string;
}

/** A SCEP envelope (a device's request, or the RA certificate's) waiting for its result. */
export interface ScepOutboxRecord {
  envelopeId: string;
  /** The transaction it answers, or 'ra' for the RA certificate request. */
  target: { kind: 'device'; key: string } | { kind: 'ra' };
  jws: string;
  attempts: number;
  nextAt: number;
  createdAt: number;
  deadline: number;
}

/** An RA key with its certificate chain from the mesh CA (leaf first). */
export interface ScepRaRecord {
  /** PKCS #8 PEM of the RSA key. */
  keyPem: string;
  chainPem?: string;
  /** The envelope that asks for its certificate (while it has none). */
  envelopeId?: string;
  requestedAt: string;
  notAfter?: string;
}

export interface OtpRecord {
  id: string;
  label?: string;
  createdAt: string;
  expiresAt?: string;
  usedAt?: string;
  /** The SCEP transactionID that used it. */
  usedBy?: string;
  revokedAt?: string;
}

export type OtpView = OtpRecord & { state: 'unused' | 'used' | 'expired' | 'revoked' };

/** A transaction is identified by its transactionID and the certificate that signed it (RFC 8894 §3.2.1.1). */
export function transactionKey(transactionId: string, signerDer: Uint8Array): string {
  return createHash('sha256').update(transactionId, 'utf8').update(Buffer.from([0])).update(signerDer).digest('base64url');
}

const otpHash = (password: string): string => createHash('sha256').update(password, 'utf8').digest('hex');

export class ScepStore {
  readonly transactions: Collection<ScepTransactionRecord>;
  readonly byEnvelope: Collection<string>;
  readonly outbox: Collection<ScepOutboxRecord>;
  /** 'current', 'next' (requested, no certificate yet), 'previous' (still decrypts until it expires). */
  readonly ra: Collection<ScepRaRecord>;
  /** SHA-256 of the password -> record. */
  readonly otps: Collection<OtpRecord>;

  constructor(readonly db: NodeStore) {
    this.transactions = db.collection('scep-txn');
    this.byEnvelope = db.collection('scep-txn-by-env');
    this.outbox = db.collection('scep-outbox');
    this.ra = db.collection('scep-ra');
    this.otps = db.collection('scep-otp');
  }

  /** Makes `count` one-time passwords (shown once; only their hashes are kept). */
  async addOtps(opts: { count?: number; label?: string; ttlMs?: number } = {}): Promise<Array<{ id: string; password: string; expiresAt?: string }>> {
    const count = opts.count ?? 1;
    if (!Number.isInteger(count) || count < 1 || count > 10_000) throw new RaError('malformed', { detail: 'count must be 1 to 10000' });
    const now = Date.now();
    const out: Array<{ id: string; password: string; expiresAt?: string }> = [];
    const ops: Parameters<NodeStore['batch']>[0] = [];
    for (let i = 0; i < count; i++) {
      // 128 random bits; PrintableString-safe (RFC 2985 §5.4.1 challengePassword is a DirectoryString).
      const password = randomBytes(16).toString('hex');
      const id = randomBytes(6).toString('hex');
      const rec: OtpRecord = {
        id,
        createdAt: new Date(now).toISOString(),
        ...(opts.label ? { label: opts.label } : {}),
        ...(opts.ttlMs ? { expiresAt: new Date(now + opts.ttlMs).toISOString() } : {}),
      };
      ops.push({ coll: this.otps as never, type: 'put', key: otpHash(password), value: rec });
      out.push({ id, password, ...(rec.expiresAt ? { expiresAt: rec.expiresAt } : {}) });
    }
    await this.db.batch(ops);
    return out;
  }

  async listOtps(now = Date.now()): Promise<OtpView[]> {
    return (await this.otps.values()).map((r) => ({ ...r, state: otpState(r, now) })).sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  async revokeOtp(id: string): Promise<OtpView> {
    for await (const [k, r] of this.otps.entries()) {
      if (r.id !== id) continue;
      if (!r.revokedAt && !r.usedAt) {
        r.revokedAt = new Date().toISOString();
        await this.otps.put(k, r);
      }
      return { ...r, state: otpState(r) };
    }
    throw new RaError('malformed', { detail: `no one-time password with id ${id}` });
  }

  /** The unused one-time password record for `password` (the store key, to mark it used in a batch), if any. */
  async findOtp(password: string, now = Date.now()): Promise<{ key: string; record: OtpRecord } | undefined> {
    const key = otpHash(password);
    const record = await this.otps.get(key);
    if (!record) return undefined;
    return otpState(record, now) === 'unused' ? { key, record } : undefined;
  }
}

function otpState(r: OtpRecord, now = Date.now()): OtpView['state'] {
  if (r.revokedAt) return 'revoked';
  if (r.usedAt) return 'used';
  if (r.expiresAt && Date.parse(r.expiresAt) < now) return 'expired';
  return 'unused';
}
