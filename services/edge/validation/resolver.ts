import { Resolver } from 'node:dns/promises';
import { isIP } from 'node:net';
import { RaError } from '../../../shared/errors/index.js';

/**
 * Name resolution for validation, inside the edge's segment: a hosts-style override table first,
 * then the configured DNS server (or the system resolver). DNS failures are RFC 8555 "dns" problems.
 */
export class SegmentResolver {
  private readonly dns: Resolver;

  constructor(private readonly hosts: Readonly<Record<string, string>> = {}, server?: string, private readonly timeoutMs = 5000) {
    this.dns = new Resolver({ timeout: timeoutMs, tries: 2 });
    if (server) this.dns.setServers([server]);
  }

  async addresses(name: string): Promise<string[]> {
    if (isIP(name)) return [name];
    const override = this.hosts[name.toLowerCase()];
    if (override) return [override];
    const [v4, v6] = await Promise.allSettled([this.dns.resolve4(name), this.dns.resolve6(name)]);
    const out = [...(v4.status === 'fulfilled' ? v4.value : []), ...(v6.status === 'fulfilled' ? v6.value : [])];
    if (out.length === 0) {
      const reason = v4.status === 'rejected' ? (v4.reason as Error).message : 'no A or AAAA records';
      throw new RaError('dns', { detail: `cannot resolve ${name}: ${reason}` });
    }
    return out;
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
