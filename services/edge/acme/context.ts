import type { Logger } from '../../../shared/logging/logger.js';
import type { AcmeConfig, Topology } from '../../../shared/config/index.js';
import type { PolicyLayer } from '../../../shared/policy/index.js';
import { KeyedLock } from '../../../shared/store/index.js';
import type { AcmeStore, CertificateRecord, ChallengeType, OrderRecord } from './records.js';
import type { CrlReason, RevokeAuthorization } from '../../../shared/envelope/index.js';
import type { NonceStore } from './nonce.js';
import type { Validators } from '../validation/validators.js';
import type { EabStore } from '../eab/eab-store.js';

export interface RevocationRequest {
  certificate: CertificateRecord;
  reason: CrlReason;
  requester: { method: RevokeAuthorization; account: string | null; jwkThumbprint: string };
}

export const ACME_PATHS = {
  directory: '/acme/directory',
  newNonce: '/acme/new-nonce',
  newAccount: '/acme/new-account',
  newOrder: '/acme/new-order',
  revokeCert: '/acme/revoke-cert',
  keyChange: '/acme/key-change',
  account: '/acme/account/',
  order: '/acme/order/',
  authz: '/acme/authz/',
  challenge: '/acme/chall/',
  certificate: '/acme/cert/',
  renewalInfo: '/acme/renewal-info/',
} as const;

/** Everything an ACME resource handler needs; built once by the edge service. */
export interface AcmeContext {
  nodeId: string;
  topology: Topology;
  acme: AcmeConfig;
  baseUrl: string; // e.g. https://127.0.0.1:8443 (no trailing slash)
  paths: typeof ACME_PATHS;
  store: AcmeStore;
  eab: EabStore;
  nonces: NonceStore;
  locks: KeyedLock;
  log: Logger;
  /** Policy layers this edge can see, in evaluation order (edge first): checked at newOrder. */
  layers: PolicyLayer[];
  validators: Validators;
  challengeTypes: ChallengeType[];
  /** Hands a finalized order (status processing, CSR checked) to the mesh. */
  submit(order: OrderRecord, csrDer: Uint8Array): Promise<void>;
  /** Sends an authorized revocation up the mesh and waits (bounded) for the CA's answer (RFC 8555 §7.6). */
  revoke(req: RevocationRequest): Promise<void>;
  /** Resolves once the order's result has been applied (valid or invalid), or after `ms`, or at stop. */
  awaitOrder(orderId: string, ms: number): Promise<void>;
  /** The certificate this edge received with exactly this DER (leaf), if any. */
  findCertificate(der: Uint8Array): Promise<CertificateRecord | undefined>;
}

export function url(ctx: AcmeContext, path: string): string {
  return ctx.baseUrl + path;
}

export const accountUrl = (ctx: AcmeContext, id: string) => url(ctx, ctx.paths.account + id);
export const orderUrl = (ctx: AcmeContext, id: string) => url(ctx, ctx.paths.order + id);
export const finalizeUrl = (ctx: AcmeContext, id: string) => url(ctx, ctx.paths.order + id + '/finalize');
export const authzUrl = (ctx: AcmeContext, id: string) => url(ctx, ctx.paths.authz + id);
export const challengeUrl = (ctx: AcmeContext, id: string) => url(ctx, ctx.paths.challenge + id);
export const certificateUrl = (ctx: AcmeContext, id: string) => url(ctx, ctx.paths.certificate + id);

export { KeyedLock };
