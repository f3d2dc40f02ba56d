import { RaError } from '../errors/index.js';
import { certificateFacts, type CertificateFacts } from '../pki/index.js';
import type { PolicyLayer } from './layer.js';

/** What every hop reads of an issue request's renewal part (the shape of EdgePayload it needs). */
export interface RenewalRequest {
  identifiers: Array<{ type: string; value: string; validation?: { method: string } }>;
  renewalOf: string | null;
}

/**
 * The checks every hop makes of a renewal with the old key, on its own layer: names marked
 * validated by 'renewal' only with a renewed certificate, only names that certificate holds, and this
 * layer's renewAfterExpiry window. Returns the renewed certificate's facts (undefined: no renewal).
 */
export function enforceRenewal(layer: PolicyLayer, p: RenewalRequest, now = Date.now()): CertificateFacts | undefined {
  const renewed = p.identifiers.filter((i) => i.validation?.method === 'renewal');
  if (p.renewalOf === null) {
    if (renewed.length > 0) throw new RaError('unauthorized', { detail: `${renewed.map((i) => i.value).join(', ')}: validated by renewal, but no certificate is renewed` });
    return undefined;
  }
  let facts: CertificateFacts;
  try {
    facts = certificateFacts(new Uint8Array(Buffer.from(p.renewalOf, 'base64url')));
  } catch {
    throw new RaError('malformed', { detail: 'renewalOf is not a DER certificate' });
  }
  const held = new Set(facts.identifiers.map((i) => `${i.type}:${i.value}`));
  const foreign = renewed.filter((i) => !held.has(`${i.type}:${i.value}`));
  if (foreign.length > 0) {
    throw new RaError('unauthorized', {
      detail: `${foreign.map((i) => i.value).join(', ')}: validated by renewal, but the renewed certificate does not hold them`,
      subproblems: foreign.map((i) => ({ type: 'unauthorized' as const, identifier: { type: i.type, value: i.value }, detail: 'not a name of the renewed certificate' })),
    });
  }
  layer.enforceRenewalWindow(facts.notAfter, now);
  return facts;
}
