import { parseCsr, type CertificateFacts, type CsrInfo } from '../pki/index.js';
import type { PolicyName } from './names.js';
import { throwIfRefused, type PolicyLayer } from './layer.js';
import type { LifetimeLayer, RequestedValidity } from './lifetime.js';
import { enforceRenewal, type RenewalRequest } from './renewal.js';

// What a relay or the gateway enforces of its own layer on an issue envelope (never trusting the hop
// below, which already checked every layer it could see): the identifiers, the CSR (key, signature,
// extensions, every SAN and the CN), maxSans, the requested validity, the renewal window, and last
// this layer's rate limits, counted once per envelope id.

/** The parts of an issue envelope's payload (EdgePayload) a hop judges. */
export interface HopRequest extends RenewalRequest {
  id: string;
  csr: string;
  origin: { node: string };
  account: { id: string; eab: string | null; lifetime?: AccountLifetime | undefined };
  requested: RequestedValidity;
}

/** The account layer's lifetime rules as the envelope carries them (account.lifetime). */
export interface AccountLifetime {
  default?: string | undefined;
  min?: string | undefined;
  max?: string | undefined;
}

export interface HopVerdict {
  /** The parsed CSR, when it was needed (given, or parsed for this layer's CSR rules). */
  csr?: CsrInfo;
  /** The renewed certificate, for a renewal with the old key. */
  renewed?: CertificateFacts;
}

/** Throws the RFC 8555 problem of the first refusal (rejectedIdentifier, badCSR, unauthorized, rateLimited). */
export async function enforceHop(layer: PolicyLayer, p: HopRequest, opts: { csr?: CsrInfo; now?: number } = {}): Promise<HopVerdict> {
  const now = opts.now ?? Date.now();
  const ids: PolicyName[] = p.identifiers.map(({ type, value }) => ({ type, value }));
  // Parsing a CSR costs a relay more than the rest of its hop together (~3 ms). A layer whose rules are
  // all on dns/ip names and maxSans decides the same on the identifiers, because the gateway issues only
  // for a CSR naming exactly the identifiers (and nothing else); so only layers with rules of their own on
  // the CSR (key, signature, extensions, cn/email/uri) parse it, and the gateway (which passes its own).
  const csr = opts.csr ?? (layer.judgesCsrItself ? await parseCsr(Buffer.from(p.csr, 'base64url'), { otherNames: true }) : undefined);
  throwIfRefused([...layer.checkOrder(ids), ...(csr ? layer.checkCsr(csr) : []), ...layer.checkRequested(p.requested, now)]);
  const renewed = enforceRenewal(layer, p, now);
  // Last, so a request refused by a rule above takes no token.
  layer.rateLimits.admit({ id: p.id, account: p.account.id, identifiers: ids, edge: p.origin.node }, now);
  return { ...(csr ? { csr } : {}), ...(renewed ? { renewed } : {}) };
}

/** The account layer's lifetime rules as a lifetime layer (named account:<EAB key id>). */
export function accountLifetimeLayer(account: HopRequest['account']): LifetimeLayer | undefined {
  const l = account.lifetime;
  if (!l) return undefined;
  return {
    name: `account:${account.eab ?? account.id}`,
    ...(l.default !== undefined ? { defaultLifetime: l.default } : {}),
    ...(l.min !== undefined ? { minLifetime: l.min } : {}),
    ...(l.max !== undefined ? { maxLifetime: l.max } : {}),
  };
}

/** What account.lifetime carries for an account layer (undefined when it sets no lifetime rule). */
export function accountLifetimeOf(policy: { defaultLifetime?: string | undefined; minLifetime?: string | undefined; maxLifetime?: string | undefined } | undefined): AccountLifetime | undefined {
  if (!policy || (policy.defaultLifetime === undefined && policy.minLifetime === undefined && policy.maxLifetime === undefined)) return undefined;
  return {
    ...(policy.defaultLifetime !== undefined ? { default: policy.defaultLifetime } : {}),
    ...(policy.minLifetime !== undefined ? { min: policy.minLifetime } : {}),
    ...(policy.maxLifetime !== undefined ? { max: policy.maxLifetime } : {}),
  };
}
