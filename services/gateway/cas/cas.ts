// The CA service interface of the gateway, after step-ca's cas/apiv1: the one place that signs.
// Backends: builtin (embedded default); step-ca, Vault PKI and Google CAS implement the same interface.
// Optional capabilities are separate interfaces, detected with a type guard (e.g. `hasCrl`).
// Errors: RaError. A definite refusal by the CA is its problem type (badCSR, unauthorized, ...); a
// transient failure is serverInternal (the gateway retries the envelope later); serverInternal with a
// reason in CAS_FINAL_REASONS (cas-http.ts) is answered to the client as it is.

import type { CrlReason } from '../../../shared/envelope/index.js';

export interface Provenance {
  /** The hop path edge -> ... -> gateway the request travelled. */
  path: string[];
  origin: { node: string; dc: string; segment?: string };
  accountId: string;
}

export interface CreateCertificateRequest {
  csrDer: Uint8Array;
  dnsNames: string[];
  ipAddresses: string[];
  lifetimeMs: number;
  notBefore?: Date;
  /** The envelope id: idempotency key at the CA service where it supports one. */
  requestId: string;
  provenance: Provenance;
}

export interface CreateCertificateResponse {
  /** Leaf first, then intermediates, PEM. */
  chainPem: string;
  serial: string;
  notAfter: Date;
}

export interface RevokeCertificateRequest {
  /** Lower-case hex serial of a certificate this CA service issued. */
  serial: string;
  /** RFC 5280 §5.3.1 CRLReason. */
  reason: CrlReason;
  /** The revoke envelope id: the same request id revoking again returns the first answer. */
  requestId: string;
}

export interface RevokeCertificateResponse {
  serial: string;
  reason: CrlReason;
  revokedAt: Date;
}

export interface CertificateAuthorityService {
  readonly type: string;
  /**
   * Whether createCertificate with the same requestId returns the first certificate instead of a
   * second one (builtin, Google CAS). When false (step-ca, Vault) the gateway never calls it twice for
   * one request: after an interrupted call the client gets a problem instead of a possible duplicate.
   */
  readonly idempotent: boolean;
  createCertificate(req: CreateCertificateRequest): Promise<CreateCertificateResponse>;
  /**
   * Revokes a certificate. Throws RaError `alreadyRevoked` when the serial was revoked by another
   * request, `malformed` when this CA service never issued it; a repeat of the same requestId
   * returns the original answer.
   */
  revokeCertificate(req: RevokeCertificateRequest): Promise<RevokeCertificateResponse>;
  /** Trust anchors clients should install (PEM). */
  rootsPem(): Promise<string>;
}

/** A signed CRL as the CA service publishes it. */
export interface CrlInfo {
  /** DER (RFC 5280 CertificateList). */
  der: Uint8Array;
  /** cRLNumber (RFC 5280 §5.2.3). */
  number: number;
  thisUpdate: Date;
  nextUpdate: Date;
}

/** Optional capability: the CA service issues CRLs itself (the builtin CA does). */
export interface CrlCapable {
  /** The current CRL, re-signed first when it is past half its validity. */
  currentCrl(): Promise<CrlInfo>;
}

export function hasCrl(cas: CertificateAuthorityService): cas is CertificateAuthorityService & CrlCapable {
  return typeof (cas as Partial<CrlCapable>).currentCrl === 'function';
}
