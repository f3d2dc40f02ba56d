import { RaError, type ProblemDocument } from '../errors/index.js';
import { formatDuration, parseDuration } from '../config/duration.js';
import type { PolicyName } from './names.js';

// Rate limits of a policy layer: token buckets per account, per identifier and per edge, kept in the
// memory of the node that enforces the layer (a restart refills every bucket; several processes of
// one node would each have their own). The edge counts newOrder requests (its own layer and the
// account layer); relays and the gateway count the issue envelopes that reach them, once per
// envelope id (a redelivery or a retried CA call is not counted again).
//
// A limit hit is RFC 8555 §6.7 rateLimited (429) with Retry-After (RFC 9110 §10.2.3). Upstream, the
// problem carries two extension members (RFC 7807 §3.2) down to the edge: `retryAfter` (seconds) and
// `rateLimit` {layer, scope}; the edge sends Retry-After with the invalid order and refuses that
// account, identifier or the whole edge at newOrder until then (UpstreamLimits), so a client is told
// early instead of validating again for a request the relay will refuse.

export const RATE_SCOPES = ['account', 'identifier', 'edge'] as const;
export type RateScope = (typeof RATE_SCOPES)[number];

export interface RateRule {
  /** Requests per period. */
  limit: number;
  /** The period, a duration like 1h. */
  per: string;
  /** Bucket size: how many may come at once (default: limit). */
  burst?: number;
}

export type RateRules = Partial<Record<RateScope, RateRule>>;

/** What one request asks of a layer's rate limits. */
export interface RateRequest {
  /** Envelope id upstream: a request is counted once per id. Absent at the edge (every newOrder counts). */
  id?: string;
  account: string;
  identifiers: PolicyName[];
  edge: string;
}

export interface RateHit {
  layer: string;
  scope: RateScope;
  rule: RateRule;
  waitMs: number;
  /** The identifiers whose buckets are empty (identifier scope). */
  identifiers: PolicyName[];
  /** The hit was reported by the upstream layer to this edge, not counted here. */
  reported?: boolean;
}

const MAX_KEYS = 100_000;

export function describeRateRule(r: RateRule): string {
  return `${r.limit} per ${r.per}${r.burst !== undefined && r.burst !== r.limit ? `, burst ${r.burst}` : ''}`;
}

/** Token buckets of one rule, one per key; memory bounded (full buckets are forgotten first). */
export class TokenBuckets {
  readonly capacity: number;
  private readonly ratePerMs: number;
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(readonly rule: RateRule, private readonly maxKeys = MAX_KEYS) {
    this.capacity = rule.burst ?? rule.limit;
    this.ratePerMs = rule.limit / parseDuration(rule.per);
  }

  /** Tokens in the bucket of `key` at `now`. */
  level(key: string, now: number): number {
    const b = this.buckets.get(key);
    if (!b) return this.capacity;
    return Math.min(this.capacity, b.tokens + Math.max(0, now - b.at) * this.ratePerMs);
  }

  /** Milliseconds until one token is in the bucket of `key` (0: now). */
  wait(key: string, now: number): number {
    const level = this.level(key, now);
    return level >= 1 ? 0 : Math.ceil((1 - level) / this.ratePerMs);
  }

  take(key: string, now: number): void {
    const tokens = this.level(key, now) - 1;
    this.buckets.delete(key); // re-inserted last: the Map stays ordered by last use
    this.buckets.set(key, { tokens, at: now });
    if (this.buckets.size > this.maxKeys) this.prune(now);
  }

  private prune(now: number): void {
    for (const [k] of this.buckets) if (this.level(k, now) >= this.capacity) this.buckets.delete(k);
    // Still too many: the least recently used go (they are the fullest of what is left).
    for (const [k] of this.buckets) {
      if (this.buckets.size <= this.maxKeys) break;
      this.buckets.delete(k);
    }
  }
}

function keysFor(scope: RateScope, req: RateRequest): string[] {
  if (scope === 'account') return [req.account];
  if (scope === 'edge') return [req.edge];
  return [...new Set(req.identifiers.map((i) => `${i.type}:${i.value}`))];
}

/** The rate limits of one layer where that layer is enforced. */
export class LayerRateLimits {
  private readonly scopes: Array<[RateScope, TokenBuckets]>;
  /** Envelope ids already counted (with when they may be forgotten). */
  private readonly admitted = new Map<string, number>();

  constructor(readonly layer: string, rules: RateRules | undefined, private readonly rememberMs = 24 * 3_600_000) {
    this.scopes = RATE_SCOPES.filter((s) => rules?.[s]).map((s) => [s, new TokenBuckets(rules![s]!)]);
  }

  get configured(): boolean {
    return this.scopes.length > 0;
  }

  /** The longest wait among this layer's buckets for the request, or undefined when it may pass now. */
  check(req: RateRequest, now = Date.now()): RateHit | undefined {
    if (req.id !== undefined && this.admitted.has(req.id)) return undefined;
    let hit: RateHit | undefined;
    for (const [scope, buckets] of this.scopes) {
      const keys = keysFor(scope, req);
      const waits = keys.map((k) => buckets.wait(k, now));
      const waitMs = Math.max(0, ...waits);
      if (waitMs > 0 && (!hit || waitMs > hit.waitMs)) {
        hit = {
          layer: this.layer,
          scope,
          rule: buckets.rule,
          waitMs,
          identifiers: scope === 'identifier' ? req.identifiers.filter((_, i) => waits[i]! > 0) : [],
        };
      }
    }
    return hit;
  }

  /** Takes one token from each bucket the request touches (call after check() found none empty). */
  take(req: RateRequest, now = Date.now()): void {
    if (this.scopes.length === 0) return;
    if (req.id !== undefined) {
      if (this.admitted.has(req.id)) return;
      this.admitted.set(req.id, now + this.rememberMs);
      if (this.admitted.size > MAX_KEYS) {
        for (const [id, until] of this.admitted) if (until < now || this.admitted.size > MAX_KEYS) this.admitted.delete(id);
      }
    }
    for (const [scope, buckets] of this.scopes) for (const k of keysFor(scope, req)) buckets.take(k, now);
  }

  /** Checks, then counts: throws RateLimitError (nothing counted) when a bucket is empty. */
  admit(req: RateRequest, now = Date.now()): void {
    admitAll([this], req, now);
  }
}

/** One request through the rate limits of several layers, all or nothing. */
export function admitAll(limits: LayerRateLimits[], req: RateRequest, now = Date.now()): void {
  for (const l of limits) {
    const hit = l.check(req, now);
    if (hit) throw new RateLimitError(hit);
  }
  for (const l of limits) l.take(req, now);
}

/** A rateLimited problem as it travels down the mesh: with the extension members the edge needs. */
export interface RateLimitedProblem extends ProblemDocument {
  retryAfter: number;
  rateLimit: { layer: string; scope: RateScope };
}

/** RFC 8555 §6.7 rateLimited, 429, naming the layer and the rule; Retry-After in whole seconds. */
export class RateLimitError extends RaError {
  readonly retryAfter: number;

  constructor(readonly hit: RateHit) {
    const retryAfter = Math.max(1, Math.ceil(hit.waitMs / 1000));
    const rule = hit.reported ? `rateLimits.${hit.scope}` : `rateLimits.${hit.scope} (${describeRateRule(hit.rule)})`;
    const target =
      hit.scope === 'identifier' ? hit.identifiers.map((i) => i.value).join(', ') : hit.scope === 'account' ? 'this account' : 'this edge';
    super('rateLimited', {
      detail: hit.reported
        ? `policy layer ${hit.layer} refused a request for ${target} by ${rule} moments ago; retry after ${retryAfter} s`
        : `policy layer ${hit.layer}: ${rule} reached for ${target}; retry after ${retryAfter} s`,
      headers: { 'Retry-After': String(retryAfter) },
      reason: 'rate-limit',
      subproblems: hit.identifiers.map((identifier) => ({
        type: 'rateLimited' as const,
        identifier,
        detail: `refused by policy layer ${hit.layer}: ${rule}`,
      })),
    });
    this.retryAfter = retryAfter;
  }

  override toProblem(): RateLimitedProblem {
    return { ...super.toProblem(), retryAfter: this.retryAfter, rateLimit: { layer: this.hit.layer, scope: this.hit.scope } };
  }
}

/** The Retry-After (seconds) and limit a problem from upstream carries, if it is a rate limit. */
export function rateLimitOf(problem: ProblemDocument | undefined): { retryAfter: number; layer: string; scope: RateScope } | undefined {
  const p = problem as Partial<RateLimitedProblem> | undefined;
  if (!p || !p.type?.endsWith(':rateLimited') || typeof p.retryAfter !== 'number' || !Number.isFinite(p.retryAfter) || p.retryAfter < 0) return undefined;
  const rl = p.rateLimit;
  if (!rl || typeof rl.layer !== 'string' || !RATE_SCOPES.includes(rl.scope as RateScope)) return undefined;
  return { retryAfter: Math.min(Math.ceil(p.retryAfter), 7 * 86_400), layer: rl.layer, scope: rl.scope as RateScope };
}

/**
 * At the edge, what an upstream layer reported: its rate limit refused this account, these
 * identifiers or this whole edge until a time. newOrder is refused early meanwhile.
 */
export class UpstreamLimits {
  private readonly until = new Map<string, { until: number; scope: RateScope }>();

  constructor(readonly layer: string) {}

  note(scope: RateScope, keys: string[], untilMs: number): void {
    for (const k of keys) {
      this.until.delete(`${scope}|${k}`);
      this.until.set(`${scope}|${k}`, { until: untilMs, scope });
    }
    if (this.until.size > MAX_KEYS) {
      const now = Date.now();
      for (const [k, v] of this.until) if (v.until <= now || this.until.size > MAX_KEYS) this.until.delete(k);
    }
  }

  /** The reported limit a request runs into, or undefined. */
  check(req: Omit<RateRequest, 'id'>, now = Date.now()): RateHit | undefined {
    let hit: RateHit | undefined;
    for (const scope of RATE_SCOPES) {
      for (const k of keysFor(scope, req)) {
        const e = this.until.get(`${scope}|${k}`);
        if (!e) continue;
        if (e.until <= now) {
          this.until.delete(`${scope}|${k}`);
          continue;
        }
        const waitMs = e.until - now;
        if (!hit || waitMs > hit.waitMs) {
          const [type, ...rest] = k.split(':');
          hit = {
            layer: this.layer,
            scope,
            rule: { limit: 1, per: formatDuration(Math.max(1000, Math.ceil(waitMs / 1000) * 1000)) },
            waitMs,
            identifiers: scope === 'identifier' ? [{ type: type!, value: rest.join(':') }] : [],
            reported: true,
          };
        }
      }
    }
    return hit;
  }
}

/** The keys an upstream rate-limit refusal of this request covers, by scope. */
export function reportedKeys(scope: RateScope, req: Omit<RateRequest, 'id'>, problem: ProblemDocument): string[] {
  if (scope === 'account') return [req.account];
  if (scope === 'edge') return [req.edge];
  const named = (problem.subproblems ?? []).flatMap((s) => (s.identifier ? [`${s.identifier.type}:${s.identifier.value}`] : []));
  return named.length > 0 ? named : keysFor('identifier', { ...req });
}
