import type { Topology } from '../config/index.js';
import { RaError } from '../errors/index.js';
import type { EdgePayload } from './envelope.js';

// Validation methods that only SCEP edges may use, checked by every relay and the gateway against
// the topology (never trust the hop below): 'scep-challenge' (a device's challenge password, RFC 8894
// §2.3) and 'scep-ra' (the edge's own RA certificate). What a SCEP request's "account" is: all devices
// enrolled through an edge share the account "scep:<edge>" (a SCEP device has no account of its own;
// the edge and its segment are what authorized it), and the RA certificate is asked for by
// "scep-ra:<edge>". A renewal of a SCEP certificate therefore comes from the same edge and account,
// which is what the gateway checks for every renewal.

/** The account id of the devices enrolled by SCEP at `edge`. */
export const scepAccountId = (edge: string): string => `scep:${edge}`;
/** The account id of `edge`'s own SCEP RA certificate request. */
export const scepRaAccountId = (edge: string): string => `scep-ra:${edge}`;

/** Throws unauthorized when the request uses a SCEP validation method its origin edge may not use. */
export function enforceValidationMethods(topology: Topology, p: Pick<EdgePayload, 'origin' | 'identifiers' | 'account' | 'renewalOf'>): void {
  const methods = new Set(p.identifiers.map((i) => i.validation?.method));
  const scepChallenge = methods.has('scep-challenge');
  const scepRa = methods.has('scep-ra');
  if (!scepChallenge && !scepRa) return;
  const edge = p.origin.node;
  const scep = topology.node(edge).scep;
  if (!scep) {
    throw new RaError('unauthorized', {
      detail: `edge "${edge}" does not serve SCEP (no scep block in the topology): names validated by ${scepRa ? 'scep-ra' : 'scep-challenge'} are refused`,
    });
  }
  if (scepRa) {
    const [only] = p.identifiers;
    // The RA certificate names exactly the edge's configured scep.raName, and renews nothing.
    if (p.identifiers.length !== 1 || only!.type !== 'dns' || only!.value !== scep.raName || p.renewalOf !== null) {
      throw new RaError('unauthorized', { detail: `a scep-ra request of edge "${edge}" may name only its scep.raName ${scep.raName}` });
    }
    if (p.account.id !== scepRaAccountId(edge)) throw new RaError('unauthorized', { detail: `a scep-ra request of edge "${edge}" must come from account ${scepRaAccountId(edge)}` });
    return;
  }
  if (p.account.id !== scepAccountId(edge)) {
    throw new RaError('unauthorized', { detail: `names validated by scep-challenge at edge "${edge}" must come from account ${scepAccountId(edge)}` });
  }
}
