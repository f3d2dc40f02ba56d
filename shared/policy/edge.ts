import type { ProblemDocument } from '../errors/index.js';
import type { PolicyName } from './names.js';
import { checkCsrLayers, checkOrderLayers, throwIfRefused, type CsrFacts, type PolicyLayer } from './layer.js';
import type { RequestedValidity } from './lifetime.js';
import { admitAll, rateLimitOf, RateLimitError, reportedKeys } from './rate-limit.js';

// The edge's part: it sees every layer of its path in the topology (plus the account layer of an
// EAB-bound account) and checks them all at newOrder and finalize, so a client is refused early;
// its own and the account layer's rate limits are counted here; what upstream layers reported of
// their rate limits is remembered per layer and refused early too.

export interface EdgeLayers {
  /** The account layer (policy bound to the account's EAB key), if any. */
  account?: PolicyLayer | undefined;
  /** The topology layers of the edge's path, edge first, gateway last. */
  path: PolicyLayer[];
}

/** Evaluation order: account -> edge -> relays -> gateway. */
export function layersInOrder(l: EdgeLayers): PolicyLayer[] {
  return l.account ? [l.account, ...l.path] : [...l.path];
}

/** newOrder: every visible layer's name rules, maxSans and lifetime bounds on the request. */
export function enforceOrderAtEdge(l: EdgeLayers, ids: PolicyName[], requested?: RequestedValidity, now = Date.now()): void {
  throwIfRefused(checkOrderLayers(layersInOrder(l), ids, requested, now));
}

/** finalize: every visible layer on the CSR. */
export function enforceCsrAtEdge(l: EdgeLayers, csr: CsrFacts): void {
  throwIfRefused(checkCsrLayers(layersInOrder(l), csr));
}

/**
 * newOrder, last step: a rate limit an upstream layer reported for this account, these identifiers or
 * this edge refuses at once; then the account and edge layers' own buckets count the order (all or
 * nothing). Throws RateLimitError (429 with Retry-After).
 */
export function admitOrderAtEdge(l: EdgeLayers, req: { account: string; identifiers: PolicyName[]; edge: string }, now = Date.now()): void {
  for (const up of l.path.slice(1)) {
    const hit = up.upstreamLimits.check(req, now);
    if (hit) throw new RateLimitError(hit);
  }
  admitAll([...(l.account ? [l.account.rateLimits] : []), l.path[0]!.rateLimits], req, now);
}

/**
 * A refusal that came down the mesh: when it is an upstream layer's rateLimited problem, remember
 * until when that layer refuses this account, these identifiers or this edge. Returns whether it was one.
 */
export function noteUpstreamRefusal(l: EdgeLayers, req: { account: string; identifiers: PolicyName[]; edge: string }, problem: ProblemDocument | undefined, now = Date.now()): boolean {
  const rl = rateLimitOf(problem);
  if (!rl) return false;
  const layer = l.path.slice(1).find((x) => x.node === rl.layer);
  if (!layer) return false;
  layer.upstreamLimits.note(rl.scope, reportedKeys(rl.scope, req, problem!), now + rl.retryAfter * 1000);
  return true;
}
