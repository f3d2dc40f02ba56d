import { createHash } from 'node:crypto';
import { RaError, type Identifier } from '../errors/index.js';
import { parseDuration, type PolicyConfig } from '../config/index.js';
import { dnsMatches, ipMatches, normalizeDns } from './names.js';

export interface LayerDecision {
  identifier: Identifier;
  allowed: boolean;
  rule: string; // which rule decided, e.g. 'deny.dns "*.pci.corp.example"', 'allow.dns (no match)'
}

/** A node's policy layer: name of the layer (the node id) plus its rules. */
export class PolicyLayer {
  readonly digest: string;

  constructor(readonly node: string, readonly policy: PolicyConfig) {
    this.digest = createHash('sha256').update(JSON.stringify(policy)).digest('base64url').slice(0, 16);
  }

  /** "<node>@<digest>" — recorded in each hop so the gateway can tell which rules a relay applied. */
  get label(): string {
    return `${this.node}@${this.digest}`;
  }

  decide(id: Identifier): LayerDecision {
    const type = id.type === 'dns' ? 'dns' : id.type === 'ip' ? 'ip' : undefined;
    if (!type) return { identifier: id, allowed: false, rule: `unsupported identifier type ${id.type}` };
    const match = type === 'dns' ? dnsMatches : ipMatches;
    const value = type === 'dns' ? normalizeDns(id.value) : id.value;
    if (type === 'dns' && value.startsWith('*.') && !this.policy.allowWildcardNames) {
      return { identifier: id, allowed: false, rule: 'allowWildcardNames is false' };
    }
    // step-ca semantics: deny wins.
    for (const r of this.policy.deny?.[type] ?? []) {
      if (match(r, value)) return { identifier: id, allowed: false, rule: `deny.${type} "${r}"` };
    }
    const allow = this.policy.allow?.[type];
    // Once a type has any allow rule, names of that type not allowed are refused.
    if (allow && allow.length > 0) {
      for (const r of allow) if (match(r, value)) return { identifier: id, allowed: true, rule: `allow.${type} "${r}"` };
      return { identifier: id, allowed: false, rule: `allow.${type} (no rule matches)` };
    }
    return { identifier: id, allowed: true, rule: 'no rule for this type' };
  }

  /**
   * Renewal by the old certificate's key instead of a fresh validation: allowed by this layer until
   * `renewAfterExpiry` after the old certificate's notAfter (a layer without the rule sets no limit).
   */
  enforceRenewalWindow(oldNotAfter: Date, now = Date.now()): void {
    const w = this.policy.renewAfterExpiry;
    if (w === undefined || now <= oldNotAfter.getTime() + parseDuration(w)) return;
    throw new RaError('unauthorized', {
      detail: `policy layer ${this.node}: the certificate to renew expired at ${oldNotAfter.toISOString()}, more than renewAfterExpiry ${w} ago; renewal with the old key is refused, the names must be validated again`,
      reason: 'policy',
    });
  }

  /** Throws rejectedIdentifier with one subproblem per refused identifier, naming this layer and the rule. */
  enforce(ids: Identifier[]): void {
    if (this.policy.maxSans !== undefined && ids.length > this.policy.maxSans) {
      throw new RaError('rejectedIdentifier', {
        detail: `policy layer ${this.node}: ${ids.length} names exceed maxSans ${this.policy.maxSans}`,
        reason: 'policy',
      });
    }
    const refused = ids.map((i) => this.decide(i)).filter((d) => !d.allowed);
    if (refused.length === 0) return;
    throw new RaError('rejectedIdentifier', {
      detail: `policy layer ${this.node} refused ${refused.map((r) => r.identifier.value).join(', ')}`,
      reason: 'policy',
      subproblems: refused.map((r) => ({
        type: 'rejectedIdentifier' as const,
        identifier: r.identifier,
        detail: `refused by policy layer ${this.node}: ${r.rule}`,
      })),
    });
  }
}

const DEFAULT_LIFETIME_MS = 24 * 3_600_000;

/**
 * The lifetime a certificate gets after every layer: the requested one (or the innermost layer's
 * defaultLifetime, or 24h), capped by every layer's maxLifetime; refused below any minLifetime.
 */
export function resolveLifetime(layers: PolicyConfig[], requestedMs?: number): number {
  const lifetime = requestedMs ?? layers.map((l) => l.defaultLifetime).find((d) => d !== undefined);
  let ms = typeof lifetime === 'string' ? parseDuration(lifetime) : (lifetime ?? DEFAULT_LIFETIME_MS);
  for (const l of layers) if (l.maxLifetime) ms = Math.min(ms, parseDuration(l.maxLifetime));
  for (const l of layers) {
    if (l.minLifetime && ms < parseDuration(l.minLifetime)) {
      throw new RaError('rejectedIdentifier', { detail: `lifetime ${ms} ms is below minLifetime ${l.minLifetime}`, reason: 'policy' });
    }
  }
  return ms;
}
