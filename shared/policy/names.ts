import { BlockList, isIP } from 'node:net';
import { domainToASCII } from 'node:url';

/** A DNS name in the form rules compare: A-labels, lower case, no trailing dot. */
export function normalizeDns(name: string): string {
  const n = name.trim().replace(/\.$/, '').toLowerCase();
  const wildcard = n.startsWith('*.');
  const ascii = domainToASCII(wildcard ? n.slice(2) : n);
  return ascii ? (wildcard ? `*.${ascii}` : ascii) : n;
}

/**
 * step-ca semantics: a pattern "*.x" matches exactly one label below x (a.x, not a.b.x, not x);
 * any other pattern matches the name exactly. A wildcard request "*.a.x" matches "*.x" only as the
 * literal wildcard pattern "*.a.x" or a pattern that covers its label ("*.x" does not match "*.a.x").
 */
export function dnsMatches(pattern: string, name: string): boolean {
  const p = normalizeDns(pattern);
  const n = normalizeDns(name);
  if (p === n) return true;
  if (p.startsWith('*.')) {
    const suffix = p.slice(1); // ".x"
    if (!n.endsWith(suffix)) return false;
    const label = n.slice(0, n.length - suffix.length);
    return label.length > 0 && !label.includes('.') && label !== '*';
  }
  return false;
}

export function ipMatches(rule: string, ip: string): boolean {
  const family = isIP(ip);
  if (family === 0) return false;
  const type = family === 4 ? 'ipv4' : 'ipv6';
  const [net, bits] = rule.split('/');
  if (!net || isIP(net) === 0) return false;
  const list = new BlockList();
  if (bits === undefined) list.addAddress(net, isIP(net) === 4 ? 'ipv4' : 'ipv6');
  else list.addSubnet(net, Number(bits), isIP(net) === 4 ? 'ipv4' : 'ipv6');
  return list.check(ip, type);
}
