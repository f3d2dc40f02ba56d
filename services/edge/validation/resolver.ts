import { Resolver } from 'node:dns/promises';
import { BlockList, isIP } from 'node:net';
import { RaError } from '../../../shared/errors/index.js';

/** Addresses no validation ever connects to: unspecified, multicast, broadcast. */
export const NEVER_VALIDATE = ['0.0.0.0/8', '224.0.0.0/4', '255.255.255.255/32', '::/128', 'ff00::/8'];

export function blockListOf(cidrs: readonly string[]): BlockList {
  const list = new BlockList();
  for (const c of cidrs) {
    const [net, bits] = c.split('/');
    const family = isIP(net ?? '') === 6 ? 'ipv6' : 'ipv4';
    if (bits === undefined) list.addAddress(net!, family);
    else list.addSubnet(net!, Number(bits), family);
  }
  return list;
}

export interface SegmentResolverOptions {
  /** hosts-style overrides, checked before DNS (tests, split horizons). */
  hosts?: Readonly<Record<string, string>>;
  /** DNS server (ip or ip:port) of the segment; default the system resolver's. */
  server?: string;
  /** CIDRs validation must never connect to (on top of NEVER_VALIDATE). */
  forbidden?: readonly string[];
  timeoutMs?: number;
}

/**
 * Name resolution for validation, inside the edge's segment: a hosts-style override table first,
 * then the configured DNS server (or the system resolver). DNS failures are RFC 8555 "dns" problems;
 * addresses the edge's config forbids are never returned.
 */
export class SegmentResolver {
  private readonly dns: Resolver;
  private readonly hosts: Readonly<Record<string, string>>;
  private readonly forbidden: BlockList;

  constructor(opts: SegmentResolverOptions = {}) {
    this.dns = new Resolver({ timeout: opts.timeoutMs ?? 5000, tries: 2 });
    if (opts.server) this.dns.setServers([opts.server]);
    this.hosts = Object.fromEntries(Object.entries(opts.hosts ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
    this.forbidden = blockListOf([...NEVER_VALIDATE, ...(opts.forbidden ?? [])]);
  }

  isForbidden(address: string): boolean {
    return this.forbidden.check(address, isIP(address) === 6 ? 'ipv6' : 'ipv4');
  }

  async addresses(name: string): Promise<string[]> {
    let out: string[];
    if (isIP(name)) out = [name];
    else if (this.hosts[name.toLowerCase()]) out = [this.hosts[name.toLowerCase()]!];
    else {
      const [v4, v6] = await Promise.allSettled([this.dns.resolve4(name), this.dns.resolve6(name)]);
      out = [...(v4.status === 'fulfilled' ? v4.value : []), ...(v6.status === 'fulfilled' ? v6.value : [])];
      if (out.length === 0) {
        const reason = v4.status === 'rejected' ? ((v4.reason as { code?: string }).code ?? (v4.reason as Error).message) : 'no A or AAAA records';
        throw new RaError('dns', { detail: `cannot resolve ${name}: ${reason}` });
      }
    }
    const allowed = out.filter((a) => !this.isForbidden(a));
    if (allowed.length === 0) {
      throw new RaError('connection', { detail: `${name} resolves only to addresses this edge may not validate against (${out.join(', ')})` });
    }
    return allowed;
  }

  async txt(name: string): Promise<string[]> {
    try {
      const recs = await this.dns.resolveTxt(name);
      return recs.map((chunks) => chunks.join(''));
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code === 'ENODATA' || code === 'ENOTFOUND') return [];
      throw new RaError('dns', { detail: `TXT lookup of ${name} failed: ${code ?? (e as Error).message}` });
    }
  }
}
