import type { Identifier, ProblemDocument } from '../../../shared/errors/index.js';
import type { JWK } from 'jose';
import { NodeStore, type Collection } from '../../../shared/store/index.js';

// What the edge keeps in its level store, one collection per ACME resource (RFC 8555 §7.1).

export type AccountStatus = 'valid' | 'deactivated' | 'revoked';
export interface AccountRecord {
  id: string;
  status: AccountStatus;
  jwk: JWK;
  thumbprint: string;
  contact: string[];
  termsOfServiceAgreed: boolean;
  eabKeyId: string | null;
  createdAt: string;
}

export type OrderStatus = 'pending' | 'ready' | 'processing' | 'valid' | 'invalid';
export interface OrderRecord {
  id: string;
  accountId: string;
  status: OrderStatus;
  expires: string;
  identifiers: Identifier[];
  notBefore?: string;
  notAfter?: string;
  authzIds: string[];
  envelopeId?: string;
  certificateId?: string;
  error?: ProblemDocument;
  createdAt: string;
  finalizedAt?: string;
  /**
   * RFC 9773 §5: the certificate this order replaces. `renewal`: its authorizations were granted by
   * that certificate (renewal with the old key, within renewAfterExpiry) instead of challenges.
   */
  replaces?: { certId: string; certificateId: string; serial: string; renewal: boolean };
}

export type AuthzStatus = 'pending' | 'valid' | 'invalid' | 'deactivated' | 'expired' | 'revoked';
export interface AuthzRecord {
  id: string;
  accountId: string;
  identifier: Identifier;
  status: AuthzStatus;
  expires: string;
  wildcard: boolean;
  challengeIds: string[];
  /** Valid without a challenge: granted by renewal of this certificate (serial) at `at`. */
  renewal?: { serial: string; at: string };
}

export type ChallengeType = 'http-01' | 'dns-01' | 'tls-alpn-01';
export type ChallengeStatus = 'pending' | 'processing' | 'valid' | 'invalid';
export interface ChallengeRecord {
  id: string;
  authzId: string;
  accountId: string;
  type: ChallengeType;
  token: string;
  status: ChallengeStatus;
  validated?: string;
  error?: ProblemDocument;
  /** Where validation reached (travels in the envelope as provenance). */
  validationFrom?: string;
}

export interface CertificateRecord {
  id: string;
  orderId: string;
  accountId: string;
  chainPem: string;
  issuedAt: string;
  /** Lower-case hex serial of the leaf (absent on records made before revocation support). */
  serial?: string;
  /** The identifiers of the order (RFC 8555 §7.6: who may revoke depends on them). */
  identifiers?: Identifier[];
  /** RFC 8555 §7.6: a revocation asked for (pending) or done (revoked). */
  revocation?: CertificateRevocation;
  /** RFC 9773 §5: the finalized order that replaced this certificate. */
  replacedBy?: string;
}

export interface CertificateRevocation {
  status: 'pending' | 'revoked';
  /** The revoke envelope id. */
  envelopeId: string;
  reason: number;
  requestedAt: string;
  revokedAt?: string;
}

/** A revocation waiting for its answer from the mesh (the revocation outbox). */
export interface RevocationOutboxRecord {
  envelopeId: string;
  certificateId: string;
  serial: string;
  jws: string;
  attempts: number;
  nextAt: number;
  createdAt: number;
}

/** The latest CRL the gateway published to this edge. */
export interface CrlRecord {
  number: number;
  thisUpdate: number;
  nextUpdate: number;
  /** base64url DER. */
  der: string;
  receivedAt: string;
}

/** A finalized order waiting for its result from the mesh: the edge's outbox. */
export interface OutboxRecord {
  envelopeId: string;
  orderId: string;
  jws: string;
  attempts: number;
  nextAt: number;
  createdAt: number;
}

export class AcmeStore {
  readonly accounts: Collection<AccountRecord>;
  readonly accountByThumbprint: Collection<string>;
  readonly orders: Collection<OrderRecord>;
  readonly accountOrders: Collection<string>;
  readonly authzs: Collection<AuthzRecord>;
  readonly challenges: Collection<ChallengeRecord>;
  readonly certificates: Collection<CertificateRecord>;
  readonly outbox: Collection<OutboxRecord>;
  readonly orderByEnvelope: Collection<string>;
  readonly certBySerial: Collection<string>;
  readonly revokeOutbox: Collection<RevocationOutboxRecord>;
  readonly crl: Collection<CrlRecord>;
  /** RFC 8555 §6.5 nonces handed out: expiry (ms) by nonce. */
  readonly nonces: Collection<number>;

  constructor(readonly db: NodeStore) {
    this.accounts = db.collection('acct');
    this.accountByThumbprint = db.collection('acct-thumb');
    this.orders = db.collection('order');
    this.accountOrders = db.collection('acct-order');
    this.authzs = db.collection('authz');
    this.challenges = db.collection('chall');
    this.certificates = db.collection('cert');
    this.outbox = db.collection('outbox');
    this.orderByEnvelope = db.collection('order-by-env');
    this.certBySerial = db.collection('cert-by-serial');
    this.revokeOutbox = db.collection('revoke-outbox');
    this.crl = db.collection('crl');
    this.nonces = db.collection('nonce');
  }
}
