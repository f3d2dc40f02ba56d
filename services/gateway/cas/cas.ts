// The CA service interface of the gateway, after step-ca's cas/apiv1: the one place that signs.
// Backends: builtin (embedded default); step-ca, Vault PKI and Google CAS implement the same interface.

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

export interface CertificateAuthorityService {
  readonly type: string;
  createCertificate(req: CreateCertificateRequest): Promise<CreateCertificateResponse>;
  /** Trust anchors clients should install (PEM). */
  rootsPem(): Promise<string>;
}
