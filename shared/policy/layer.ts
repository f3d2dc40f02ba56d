import { createHash } from 'node:crypto';
import { isIP } from 'node:net';
import { RaError, type Identifier, type ProblemType } from '../errors/index.js';
import { parseDuration } from '../config/duration.js';
import type { PolicyConfig } from '../config/index.js';
import type { CsrInfo } from '../pki/index.js';
import {
  cnKey,
  cnLooksLike,
  cnMatches,
  dnsDenies,
  dnsKey,
  dnsMatches,
  emailMatches,
  ipMatches,
  NAME_TYPES,
  parseMailbox,
  uriHost,
  uriMatches,
  type NameType,
  type PolicyName,
} from './names.js';
import { extensionLabel, extensionOid } from './csr-rules.js';
import { checkRequestedLifetime, type RequestedValidity } from './lifetime.js';
import { LayerRateLimits, UpstreamLimits } from './rate-limit.js';

// A policy layer: the rules of one node (or of an ACME account, bound to its EAB key), evaluated
// where that node runs. Every check yields a Check naming the layer and the rule that decided, so the
// same evaluation feeds enforcement (one RFC 8555 problem for all refusals) and `ra-mesh policy explain`.

export interface LayerDecision {
  identifier: PolicyName;
  allowed: boolean;
  rule: string; // which rule decided, e.g. 'deny.dns "*.pci.corp.example"', 'allow.dns (no rule matches)'
}

export type CheckKind = 'name' | 'maxSans' | 'key' | 'signature' | 'extension' | 'lifetime';

/** One rule's verdict in one layer. */
export interface Check {
  layer: string;
  kind: CheckKind;
  /** What was judged: "dns a.corp.example", "key EC P-256", "4 names", ... */
  subject: string;
  identifier?: PolicyName;
  allowed: boolean;
  rule: string;
}

/** What the layer checks of a CSR (parseCsr's CsrInfo, parsed with otherNames). */
export type CsrFacts = Pick<CsrInfo, 'dnsNames' | 'ipAddresses' | 'commonName' | 'keyAlgorithm' | 'keyDescription' | 'signatureAlgorithm' | 'extensions'> &
  Partial<Pick<CsrInfo, 'emailAddresses' | 'uris' | 'keyBits' | 'curve'>>;

/** A layer's policy: the topology's shape, without the defaults it fills (EAB policies, tests). */
export type LayerPolicy = Omit<PolicyConfig, 'allowWildcardNames'> & { allowWildcardNames?: boolean };

const isWildcard = (v: string) => v.trim().startsWith('*.');

/** A node's policy layer: name of the layer (the node id, or account:<EAB key id>) plus its rules. */
export class PolicyLayer {
  readonly digest: string;
  /** This layer's token buckets, used where the layer is enforced. */
  readonly rateLimits: LayerRateLimits;
  /** At an edge: rate-limit refusals this (upstream) layer reported, so newOrder refuses early. */
  readonly upstreamLimits: UpstreamLimits;

  constructor(readonly node: string, readonly policy: LayerPolicy) {
    this.digest = createHash('sha256').update(JSON.stringify(policy)).digest('base64url').slice(0, 16);
    this.rateLimits = new LayerRateLimits(node, policy.rateLimits);
    this.upstreamLimits = new UpstreamLimits(node);
  }

  /** "<node>@<digest>" — recorded in each hop so the gateway can tell which rules a relay applied. */
  get label(): string {
    return `${this.node}@${this.digest}`;
  }

  /**
   * Whether this layer has rules only a look into the CSR can decide: key, signature algorithm or
   * extension rules, or cn/email/uri names (which are not order identifiers).
   */
  get judgesCsrItself(): boolean {
    // Asked for every request at every hop; the policy never changes after construction.
    if (this.#judgesCsr === undefined) {
      const p = this.policy;
      const names = (['cn', 'email', 'uri'] as const).some((t) => this.list('allow', t).length + this.list('deny', t).length > 0);
      this.#judgesCsr = names || p.keys !== undefined || p.signatureAlgorithms !== undefined || p.extensions !== undefined;
    }
    return this.#judgesCsr;
  }

  #judgesCsr: boolean | undefined;

  private list(kind: 'allow' | 'deny', type: NameType): string[] {
    return this.policy[kind]?.[type] ?? [];
  }

  /** Whether the layer has any name rule at all (without one, every name passes, as in step-ca). */
  get hasNameRules(): boolean {
    return NAME_TYPES.some((t) => this.list('allow', t).length > 0 || this.list('deny', t).length > 0);
  }

  /** step-ca: once any allow rule exists, a name of a type without any rule is not explicitly permitted. */
  get hasAllowRules(): boolean {
    return NAME_TYPES.some((t) => this.list('allow', t).length > 0);
  }

  /** The verdict of this layer's name rules on one name (dns, ip, email, uri, cn). */
  decide(id: PolicyName): LayerDecision {
    const identifier = { type: id.type, value: id.value };
    const verdict = (allowed: boolean, rule: string): LayerDecision => ({ identifier, allowed, rule });
    if (!(NAME_TYPES as readonly string[]).includes(id.type)) return verdict(false, `unsupported identifier type ${id.type}`);
    const type = id.type as NameType;
    const value = id.value;
    // RFC 8555 §7.1.3 wildcards: only where the layer explicitly allows them (every layer, also without name rules).
    if (type === 'dns' && isWildcard(value) && !this.policy.allowWildcardNames) return verdict(false, 'allowWildcardNames is false');
    if (type === 'cn') return this.decideCn(identifier);
    if (!this.hasNameRules) return verdict(true, 'no name rules');
    const allow = this.list('allow', type);
    const deny = this.list('deny', type);
    // Names that cannot be compared are refused once a layer has rules (step-ca CannotParseDomain etc.).
    const unparseable = this.parseError(type, value);
    if (unparseable && !(type === 'uri' && allow.length + deny.length === 0)) return verdict(false, unparseable);
    // step-ca semantics: deny wins.
    for (const r of deny) if (this.denies(type, r, value)) return verdict(false, `deny.${type} "${r}"`);
    // Once a type has an allow rule, names of that type not allowed are refused.
    if (allow.length > 0) {
      for (const r of allow) if (this.allows(type, r, value)) return verdict(true, `allow.${type} "${r}"`);
      return verdict(false, `allow.${type} (no rule matches)`);
    }
    if (deny.length > 0) return verdict(true, `no deny.${type} rule matches`);
    // step-ca: with allow rules of other types, a type without any rule is not permitted.
    if (this.hasAllowRules) return verdict(false, `allow (this layer allows only the names it lists; it has no ${type} rule)`);
    return verdict(true, 'no rule for this type');
  }

  /**
   * A subject common name: cn rules first (deny wins, an allow decides); otherwise it is judged by the
   * rules of the type it looks like (IP address, email, URI, else DNS name), as step-ca does.
   */
  private decideCn(identifier: PolicyName): LayerDecision {
    const value = identifier.value;
    for (const r of this.list('deny', 'cn')) if (cnMatches(r, value)) return { identifier, allowed: false, rule: `deny.cn "${r}"` };
    for (const r of this.list('allow', 'cn')) if (cnMatches(r, value)) return { identifier, allowed: true, rule: `allow.cn "${r}"` };
    if (!this.hasNameRules) return { identifier, allowed: true, rule: 'no name rules' };
    const as = cnLooksLike(value);
    const d = this.decide({ type: as, value });
    return { identifier, allowed: d.allowed, rule: `common name judged as ${as}: ${d.rule}` };
  }

  private parseError(type: NameType, value: string): string | undefined {
    switch (type) {
      case 'dns':
        return dnsKey(value) === undefined ? `"${value}" is not a DNS name that can be compared` : undefined;
      case 'ip':
        return isIP(value.trim()) === 0 ? `"${value}" is not an IP address` : undefined;
      case 'email':
        return parseMailbox(value) === undefined ? `"${value}" is not an email address that can be compared` : undefined;
      case 'uri': {
        const h = uriHost(value);
        return 'error' in h ? `${h.error} ("${value}")` : undefined;
      }
      default:
        return undefined;
    }
  }

  private denies(type: NameType, rule: string, value: string): boolean {
    if (type === 'dns') return dnsDenies(rule, value);
    return this.allows(type, rule, value);
  }

  private allows(type: NameType, rule: string, value: string): boolean {
    switch (type) {
      case 'dns':
        return dnsMatches(rule, value);
      case 'ip':
        return ipMatches(rule, value.trim());
      case 'email':
        return emailMatches(rule, value);
      case 'uri':
        return uriMatches(rule, value);
      case 'cn':
        return cnMatches(rule, value);
    }
  }

  /** One Check per name. */
  checkNames(names: PolicyName[]): Check[] {
    return names.map((n) => {
      const d = this.decide(n);
      return { layer: this.node, kind: 'name', subject: `${n.type} ${n.value}`, identifier: d.identifier, allowed: d.allowed, rule: d.rule };
    });
  }

  /** maxSans for a certificate of `count` subject alternative names (nothing when the layer sets none). */
  checkSans(count: number): Check[] {
    const max = this.policy.maxSans;
    if (max === undefined) return [];
    return [{ layer: this.node, kind: 'maxSans', subject: `${count} subject alternative name${count === 1 ? '' : 's'}`, allowed: count <= max, rule: `maxSans ${max}` }];
  }

  /** What newOrder asks of this layer: its identifiers and how many. */
  checkOrder(ids: PolicyName[]): Check[] {
    return [...this.checkNames(ids), ...this.checkSans(ids.length)];
  }

  /** Requested notBefore/notAfter against this layer's lifetime bounds (RFC 8555 §7.4). */
  checkRequested(requested: RequestedValidity | undefined, now = Date.now()): Check[] {
    return checkRequestedLifetime({ name: this.node, ...this.policy }, requested, now).map((c) => ({
      layer: this.node,
      kind: 'lifetime',
      subject: `validity ${requested?.notBefore ?? 'now'} .. ${requested?.notAfter}`,
      allowed: c.allowed,
      rule: c.rule,
    }));
  }

  /** Key, signature algorithm, extensions, maxSans and every name of a CSR (SANs and subject CN). */
  checkCsr(csr: CsrFacts): Check[] {
    const out: Check[] = [];
    const c = (kind: CheckKind, subject: string, allowed: boolean, rule: string) => out.push({ layer: this.node, kind, subject, allowed, rule });
    const keys = this.policy.keys;
    const key = `key ${csr.keyDescription}`;
    if (keys?.types) c('key', key, (keys.types as string[]).includes(csr.keyAlgorithm), `keys.types [${keys.types.join(', ')}]`);
    if (keys?.curves && csr.keyAlgorithm === 'EC') c('key', key, (keys.curves as string[]).includes(csr.curve ?? ''), `keys.curves [${keys.curves.join(', ')}]`);
    if (keys?.rsaMinBits !== undefined && csr.keyAlgorithm === 'RSA') c('key', key, (csr.keyBits ?? 0) >= keys.rsaMinBits, `keys.rsaMinBits ${keys.rsaMinBits}`);
    if (keys?.rsaMaxBits !== undefined && csr.keyAlgorithm === 'RSA') c('key', key, (csr.keyBits ?? 0) <= keys.rsaMaxBits, `keys.rsaMaxBits ${keys.rsaMaxBits}`);
    const algs = this.policy.signatureAlgorithms;
    if (algs) c('signature', `signature ${csr.signatureAlgorithm}`, (algs as string[]).includes(csr.signatureAlgorithm), `signatureAlgorithms [${algs.join(', ')}]`);
    const present = new Set(csr.extensions.map((e) => e.oid));
    for (const r of this.policy.extensions?.required ?? []) {
      const oid = extensionOid(r)!;
      c('extension', `extension ${extensionLabel(oid)}`, present.has(oid), `extensions.required ${r}`);
    }
    for (const r of this.policy.extensions?.forbidden ?? []) {
      const oid = extensionOid(r)!;
      if (present.has(oid)) c('extension', `extension ${extensionLabel(oid)}`, false, `extensions.forbidden ${r}`);
    }
    const sans: PolicyName[] = [
      ...csr.dnsNames.map((value) => ({ type: 'dns', value })),
      ...csr.ipAddresses.map((value) => ({ type: 'ip', value })),
      ...(csr.emailAddresses ?? []).map((value) => ({ type: 'email', value })),
      ...(csr.uris ?? []).map((value) => ({ type: 'uri', value })),
    ];
    out.push(...this.checkSans(sans.length));
    out.push(...this.checkNames(sans));
    // The CN is judged on its own when cn rules exist or it is not one of the SANs (else it is a SAN's twin).
    const cn = csr.commonName?.trim();
    if (cn) {
      const twin = sans.some((s) => (s.type === 'dns' || s.type === 'ip') && cnKey(s.value) === cnKey(cn));
      const cnRules = this.list('allow', 'cn').length + this.list('deny', 'cn').length > 0;
      if (cnRules || !twin) out.push(...this.checkNames([{ type: 'cn', value: cn }]));
    }
    return out;
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
    throwIfRefused(this.checkOrder(ids));
  }

  /** Throws rejectedIdentifier (names) or badCSR (key, signature, extensions) naming this layer and the rule. */
  enforceCsr(csr: CsrFacts): void {
    throwIfRefused(this.checkCsr(csr));
  }
}

/**
 * The one RFC 8555 problem for every refusal among the checks (undefined when none): rejectedIdentifier
 * with one subproblem per refused name (the first layer in evaluation order that refused it, with its
 * rule) when a name, maxSans or the lifetime was refused; badCSR when only key, signature or extension
 * rules refused. The detail names every refusing layer and rule.
 */
export function refusalOf(checks: Check[]): RaError | undefined {
  const refused = checks.filter((c) => !c.allowed);
  if (refused.length === 0) return undefined;
  const firstPerName = new Map<string, Check>();
  const others: Check[] = [];
  for (const c of refused) {
    if (c.kind === 'name' && c.identifier) {
      const k = `${c.identifier.type}:${c.identifier.value}`;
      if (!firstPerName.has(k)) firstPerName.set(k, c);
    } else if (!others.some((o) => o.layer === c.layer && o.rule === c.rule && o.subject === c.subject)) {
      others.push(c);
    }
  }
  const shown = [...firstPerName.values(), ...others];
  const csrOnly = firstPerName.size === 0 && others.every((o) => o.kind === 'key' || o.kind === 'signature' || o.kind === 'extension');
  const type: ProblemType = csrOnly ? 'badCSR' : 'rejectedIdentifier';
  const byLayer = new Map<string, string[]>();
  for (const c of shown) {
    const what = c.kind === 'name' ? `${c.identifier!.value} (${c.rule})` : `${c.subject}: ${c.rule}`;
    byLayer.set(c.layer, [...(byLayer.get(c.layer) ?? []), what]);
  }
  return new RaError(type, {
    detail: [...byLayer].map(([layer, what]) => `policy layer ${layer} refused ${what.join(', ')}`).join('; '),
    reason: 'policy',
    subproblems: [...firstPerName.values()].map((c) => ({
      type: 'rejectedIdentifier' as const,
      identifier: c.identifier!,
      detail: `refused by policy layer ${c.layer}: ${c.rule}`,
    })),
  });
}

export function throwIfRefused(checks: Check[]): void {
  const e = refusalOf(checks);
  if (e) throw e;
}

/** Every layer in evaluation order on a newOrder: identifiers, maxSans, requested validity. */
export function checkOrderLayers(layers: PolicyLayer[], ids: PolicyName[], requested?: RequestedValidity, now = Date.now()): Check[] {
  return layers.flatMap((l) => [...l.checkOrder(ids), ...l.checkRequested(requested, now)]);
}

/** Every layer in evaluation order on a CSR. */
export function checkCsrLayers(layers: PolicyLayer[], csr: CsrFacts): Check[] {
  return layers.flatMap((l) => l.checkCsr(csr));
}
