import { isIP } from 'node:net';
import { RaError, type Identifier } from '../../../shared/errors/index.js';
import { normalizeDns } from '../../../shared/policy/index.js';

const LABEL_RE = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;

/** RFC 1035 host name in A-label form; a leading "*." is allowed (RFC 8555 §7.1.3 wildcards). */
export function isValidDnsName(name: string): boolean {
  if (name.length === 0 || name.length > 253) return false;
  const labels = name.split('.');
  if (labels.length < 2) return name === 'localhost';
  return labels.every((l, i) => (i === 0 && l === '*') || LABEL_RE.test(l)) && !/^\d+$/.test(labels[labels.length - 1]!);
}

/**
 * Validates and normalises newOrder identifiers (RFC 8555 §7.4, RFC 8738 for "ip").
 * Invalid ones are refused with one subproblem per identifier (RFC 8555 §6.7.1).
 */
export function normalizeIdentifiers(input: unknown): Identifier[] {
  if (!Array.isArray(input) || input.length === 0) throw new RaError('malformed', { detail: 'identifiers must be a non-empty array' });
  if (input.length > 100) throw new RaError('rejectedIdentifier', { detail: 'at most 100 identifiers in one order' });
  const out: Identifier[] = [];
  const bad: Array<{ type: 'unsupportedIdentifier' | 'rejectedIdentifier' | 'malformed'; detail: string; identifier?: Identifier }> = [];
  for (const raw of input) {
    if (typeof raw !== 'object' || raw === null || typeof raw.type !== 'string' || typeof raw.value !== 'string') {
      throw new RaError('malformed', { detail: 'each identifier needs a string "type" and "value"' });
    }
    const id = { type: raw.type as string, value: raw.value as string };
    if (id.type === 'dns') {
      const v = normalizeDns(id.value);
      if (!isValidDnsName(v)) {
        bad.push({ type: 'rejectedIdentifier', detail: `"${id.value}" is not a valid DNS name`, identifier: id });
        continue;
      }
      if (v.indexOf('*', 1) !== -1) {
        bad.push({ type: 'rejectedIdentifier', detail: 'a wildcard must be the whole leftmost label', identifier: id });
        continue;
      }
      out.push({ type: 'dns', value: v });
    } else if (id.type === 'ip') {
      // RFC 8738 §3: the value is the textual form of the address.
      if (isIP(id.value) === 0) {
        bad.push({ type: 'malformed', detail: `"${id.value}" is not an IP address`, identifier: id });
        continue;
      }
      out.push({ type: 'ip', value: canonicalIp(id.value) });
    } else {
      bad.push({ type: 'unsupportedIdentifier', detail: `identifier type "${id.type}" is not supported`, identifier: id });
    }
  }
  if (bad.length > 0) {
    const type = bad.length === 1 ? bad[0]!.type : 'compound';
    throw new RaError(type === 'compound' ? 'compound' : type, {
      detail: bad.map((b) => b.detail).join('; '),
      subproblems: bad,
    });
  }
  // Deduplicate; order is kept.
  const seen = new Set<string>();
  return out.filter((i) => {
    const k = `${i.type}:${i.value}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

export function canonicalIp(ip: string): string {
  if (isIP(ip) === 4) return ip;
  // Let the URL parser compress and lower-case an IPv6 address.
  return new URL(`http://[${ip}]/`).hostname.slice(1, -1);
}

export function identifierKey(i: Identifier): string {
  return `${i.type}:${i.value}`;
}
