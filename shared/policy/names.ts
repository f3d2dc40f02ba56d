import { BlockList, isIP } from 'node:net';
import { domainToASCII } from 'node:url';

// Name rules of a policy layer, after step-ca's x509 name policy (policy/validate.go, options.go):
// dns, ip, email, uri (host part) and cn, compared case-insensitively, IDNs as A-labels (UTS #46 /
// IDNA via the WHATWG URL parser's domainToASCII, the same mapping browsers apply).
//
// Patterns (what a topology or EAB policy may write):
//   dns    "host.x" (exactly that name) or "*.x" (exactly one label below x: a.x, never a.b.x, never x)
//   ip     an address or CIDR range, v4 or v6; an IPv4-mapped IPv6 address matches IPv4 rules
//   email  "user@domain" (that mailbox), "domain" or "@domain" (any mailbox at exactly that domain),
//          ".domain" (any mailbox exactly one label below domain); no "*" (as step-ca)
//   uri    host patterns like dns ("host.x", "*.x"); a URI without a host, with an IP host or a "*" in
//          its host never matches a rule (RFC 5280 §4.2.1.10)
//   cn     exact common names

export const NAME_TYPES = ['dns', 'ip', 'email', 'uri', 'cn'] as const;
export type NameType = (typeof NAME_TYPES)[number];

/** A name a policy layer judges: an ACME identifier (dns, ip) or a CSR name (also email, uri, cn). */
export interface PolicyName {
  type: string;
  value: string;
}

/** A DNS name in the form rules compare: A-labels, lower case, no trailing dot. */
export function normalizeDns(name: string): string {
  const n = name.trim().replace(/\.$/, '').toLowerCase();
  const wildcard = n.startsWith('*.');
  const ascii = domainToASCII(wildcard ? n.slice(2) : n);
  return ascii ? (wildcard ? `*.${ascii}` : ascii) : n;
}

/**
 * A DNS name as rules see it, or undefined when it cannot be compared (empty labels, a trailing dot,
 * characters outside printable ASCII after IDNA, a "*" anywhere but as the whole leftmost label): step-ca
 * refuses such names whenever a layer has rules (domainToReverseLabels, CannotParseDomain).
 */
export function dnsKey(name: string): string | undefined {
  const raw = name.trim();
  // An empty label anywhere, also the root label of an absolute name "a.x." (step-ca refuses those too).
  if (raw === '' || raw.startsWith('.') || raw.endsWith('.')) return undefined;
  const wildcard = raw.startsWith('*.');
  const rest = wildcard ? raw.slice(2) : raw;
  if (rest.includes('*')) return undefined;
  const ascii = domainToASCII(rest.toLowerCase());
  if (!ascii || !labelsOk(ascii)) return undefined;
  return wildcard ? `*.${ascii}` : ascii;
}

function labelsOk(domain: string): boolean {
  return domain.split('.').every((l) => l.length > 0 && l.length <= 63 && /^[\x21-\x7e]+$/.test(l) && !l.includes('*'));
}

/** A dns/uri host pattern in its compared form, or an explanation of why it is not one. */
export function parseDnsPattern(pattern: string): { key: string } | { error: string } {
  const key = dnsKey(pattern);
  if (key === undefined) {
    return { error: `"${pattern}" is not a DNS name pattern: a name, or "*." and a name (a "*" only as the whole leftmost label, no empty labels)` };
  }
  return { key };
}

/**
 * step-ca semantics: a pattern "*.x" matches exactly one label below x (a.x, not a.b.x, not x); any
 * other pattern matches the name exactly. A wildcard request "*.x" matches only the pattern "*.x".
 * Both sides are compared as A-labels, in lower case.
 */
export function dnsMatches(pattern: string, name: string): boolean {
  const p = dnsKey(pattern);
  const n = dnsKey(name);
  if (p === undefined || n === undefined) return false;
  if (p === n) return true;
  if (n.startsWith('*.')) return false;
  if (p.startsWith('*.')) {
    const suffix = p.slice(1); // ".x"
    if (!n.endsWith(suffix)) return false;
    const label = n.slice(0, n.length - suffix.length);
    return label.length > 0 && !label.includes('.');
  }
  return false;
}

/**
 * Whether a deny pattern refuses a name. For a wildcard request "*.x" this is stricter than step-ca:
 * the wildcard certificate would be valid for every a.x, so it is refused when the pattern is "*.x"
 * or names any single a.x (step-ca compares the "*" label literally and lets "*.x" past a deny of "a.x").
 */
export function dnsDenies(pattern: string, name: string): boolean {
  if (dnsMatches(pattern, name)) return true;
  const p = dnsKey(pattern);
  const n = dnsKey(name);
  if (p === undefined || n === undefined || !n.startsWith('*.') || p.startsWith('*.')) return false;
  const base = n.slice(1); // ".x"
  return p.endsWith(base) && p.length > base.length && !p.slice(0, p.length - base.length).includes('.');
}

/** An IP rule (address or CIDR) as a BlockList, or an explanation of why it is not one. */
export function parseIpRule(rule: string): { list: BlockList } | { error: string } {
  const [net, bits, extra] = rule.trim().split('/');
  const family = isIP(net ?? '');
  const max = family === 4 ? 32 : 128;
  if (family === 0 || extra !== undefined || (bits !== undefined && (!/^\d+$/.test(bits) || Number(bits) > max))) {
    return { error: `"${rule}" is not an IP address or CIDR range (e.g. 10.0.0.0/8, fd00::/8)` };
  }
  const list = new BlockList();
  const type = family === 4 ? 'ipv4' : 'ipv6';
  // Host bits in the network part are ignored (Go's net.ParseCIDR, as step-ca).
  if (bits === undefined) list.addAddress(net!, type);
  else list.addSubnet(net!, Number(bits), type);
  return { list };
}

/** Whether the address is in the rule's range; an IPv4-mapped IPv6 address counts as its IPv4 address. */
export function ipMatches(rule: string, ip: string): boolean {
  const family = isIP(ip);
  if (family === 0) return false;
  const r = parseIpRule(rule);
  if ('error' in r) return false;
  return r.list.check(ip, family === 4 ? 'ipv4' : 'ipv6');
}

/** An email address as rules see it: local part and A-label domain, or undefined when it does not parse. */
export function parseMailbox(address: string): { local: string; domain: string } | undefined {
  const s = address.trim();
  const at = s.lastIndexOf('@');
  if (at <= 0 || at === s.length - 1) return undefined;
  const local = s.slice(0, at);
  // RFC 5321 §4.1.2 atoms and dots (quoted local parts are not accepted: they are not needed by devices).
  if (!/^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+$/.test(local) || local.startsWith('.') || local.endsWith('.') || local.includes('..')) return undefined;
  const domain = dnsKey(s.slice(at + 1));
  if (domain === undefined || domain.startsWith('*.')) return undefined;
  return { local: local.toLowerCase(), domain };
}

/** An email rule in its compared form, or an explanation of why it is not one. */
export function parseEmailRule(rule: string): { mailbox?: { local: string; domain: string }; domain?: string; subdomain?: string } | { error: string } {
  const r = rule.trim();
  const bad = { error: `"${rule}" is not an email rule: "user@domain", "domain", "@domain" or ".domain" (no "*")` };
  if (r === '' || r.includes('*') || (r.match(/@/g) ?? []).length > 1) return bad;
  if (r.includes('@') && !r.startsWith('@')) {
    const mailbox = parseMailbox(r);
    return mailbox ? { mailbox } : bad;
  }
  const d = r.startsWith('@') ? r.slice(1) : r;
  if (d.startsWith('.')) {
    const key = dnsKey(d.slice(1));
    return key && !key.startsWith('*.') ? { subdomain: key } : bad;
  }
  const key = dnsKey(d);
  return key && !key.startsWith('*.') ? { domain: key } : bad;
}

/**
 * step-ca semantics: "user@domain" matches that mailbox, "domain"/"@domain" any mailbox at exactly
 * that domain, ".domain" any mailbox exactly one label below it. Local parts are compared without
 * regard to case, like everything else here (stricter for deny rules than RFC 5280 §7.5's exact match).
 */
export function emailMatches(rule: string, address: string): boolean {
  const m = parseMailbox(address);
  const r = parseEmailRule(rule);
  if (!m || 'error' in r) return false;
  if (r.mailbox) return r.mailbox.local === m.local && r.mailbox.domain === m.domain;
  if (r.domain) return m.domain === r.domain;
  const base = `.${r.subdomain!}`;
  return m.domain.endsWith(base) && m.domain.length > base.length && !m.domain.slice(0, m.domain.length - base.length).includes('.');
}

/** The host of a URI as rules see it, or why it cannot be matched (RFC 5280 §4.2.1.10). */
export function uriHost(uri: string): { host: string } | { error: string } {
  let u: URL;
  try {
    u = new URL(uri.trim());
  } catch {
    return { error: 'not a URI' };
  }
  let host: string;
  try {
    host = decodeURIComponent(u.hostname);
  } catch {
    return { error: 'the URI host is not a DNS name' };
  }
  if (host === '') return { error: 'a URI without a host cannot be matched' };
  if (host.includes('*')) return { error: 'a URI host with "*" cannot be matched' };
  if (host.startsWith('[') || isIP(host) !== 0) return { error: 'a URI with an IP address as host cannot be matched' };
  const key = dnsKey(host);
  if (key === undefined) return { error: 'the URI host is not a DNS name' };
  return { host: key };
}

export function uriMatches(pattern: string, uri: string): boolean {
  const h = uriHost(uri);
  return 'host' in h && dnsMatches(pattern, h.host);
}

/** Common names compare exactly, case-insensitively (an IDN as A-labels). */
export function cnKey(cn: string): string {
  const s = cn.trim();
  return dnsKey(s) ?? s.toLowerCase();
}

export function cnMatches(rule: string, cn: string): boolean {
  return cnKey(rule) === cnKey(cn);
}

/** What a common name looks like, to be judged by that type's rules (step-ca x509util.SplitSANs). */
export function cnLooksLike(cn: string): Exclude<NameType, 'cn'> {
  const s = cn.trim();
  if (isIP(s) !== 0) return 'ip';
  if (/^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(s)) return 'uri';
  if (s.includes('@')) return 'email';
  return 'dns';
}

/** Why a rule of this type is not valid, or undefined when it is (used by the topology schema). */
export function ruleError(type: NameType, rule: string): string | undefined {
  switch (type) {
    case 'dns':
    case 'uri': {
      const r = parseDnsPattern(rule);
      return 'error' in r ? r.error : undefined;
    }
    case 'ip': {
      const r = parseIpRule(rule);
      return 'error' in r ? r.error : undefined;
    }
    case 'email': {
      const r = parseEmailRule(rule);
      return 'error' in r ? r.error : undefined;
    }
    case 'cn':
      return rule.trim() === '' ? 'a common name rule cannot be empty' : undefined;
  }
}
