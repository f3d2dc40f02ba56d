import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { isIP } from 'node:net';
import { RaError } from '../../../shared/errors/index.js';
import type { SegmentResolver } from './resolver.js';
import type { Validator } from './validators.js';

const MAX_BODY = 8 * 1024;
/** Redirects followed at most (RFC 8555 §8.3 allows following them; Let's Encrypt stops at 10). */
export const MAX_REDIRECTS = 10;

interface Fetched {
  status: number;
  body: string;
  location?: string;
}

function fetchOnce(url: URL, address: string, timeoutMs: number): Promise<Fetched> {
  const https = url.protocol === 'https:';
  const port = Number(url.port || (https ? 443 : 80));
  const hostHeader = url.host;
  const servername = isIP(url.hostname.replace(/^\[|\]$/g, '')) ? undefined : url.hostname;
  return new Promise((resolve, reject) => {
    const opts = {
      host: address,
      port,
      path: url.pathname + url.search,
      method: 'GET',
      headers: { Host: hostHeader, 'User-Agent': 'ra-mesh-edge-validator', Accept: '*/*' },
      timeout: timeoutMs,
      // A redirect to https is followed without checking the certificate: the key authorization in
      // the body is the proof, as for Let's Encrypt's validation authority.
      ...(https ? { rejectUnauthorized: false, ...(servername ? { servername } : {}) } : {}),
    };
    const req = (https ? httpsRequest : httpRequest)(opts, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        body += d;
        if (body.length > MAX_BODY) req.destroy(new Error(`response body larger than ${MAX_BODY} bytes`));
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, ...(res.headers.location ? { location: res.headers.location } : {}) }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`timeout after ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

export interface Http01Options {
  /** Port of the first request (80 in production; tests use another). */
  port: number;
  /** Ports a redirect may lead to, per scheme. */
  redirectPorts?: { http: number[]; https: number[] };
  timeoutMs?: number;
}

/**
 * RFC 8555 §8.3 http-01: GET http://<domain>:<port>/.well-known/acme-challenge/<token> from inside the
 * segment; the body must be the key authorization (trailing whitespace ignored). Redirects are followed
 * up to MAX_REDIRECTS, to http or https on the allowed ports only, each target resolved and checked
 * against the edge's forbidden addresses like the first.
 */
export function http01Validator(resolver: SegmentResolver, opts: Http01Options): Validator {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const allowed = opts.redirectPorts ?? { http: [opts.port, 80], https: [443] };
  return async ({ identifier, token, keyAuthorization }) => {
    const host = identifier.type === 'ip' && identifier.value.includes(':') ? `[${identifier.value}]` : identifier.value;
    let url = new URL(`http://${host}:${opts.port}/.well-known/acme-challenge/${token}`);
    for (let hop = 0; ; hop++) {
      const name = url.hostname.replace(/^\[|\]$/g, '');
      const addresses = await resolver.addresses(name);
      let res: Fetched | undefined;
      let address = '';
      let lastErr: Error | undefined;
      for (const a of addresses) {
        try {
          res = await fetchOnce(url, a, timeoutMs);
          address = a;
          break;
        } catch (e) {
          lastErr = e as Error;
        }
      }
      if (!res) throw new RaError('connection', { detail: `${url.href}: ${lastErr?.message ?? 'no address to connect to'}` });
      if (res.status >= 300 && res.status < 400 && res.location) {
        if (hop >= MAX_REDIRECTS) throw new RaError('connection', { detail: `too many redirects (more than ${MAX_REDIRECTS}) from ${identifier.value}` });
        let next: URL;
        try {
          next = new URL(res.location, url);
        } catch {
          throw new RaError('connection', { detail: `${url.href} redirected to an invalid URL` });
        }
        const scheme = next.protocol.replace(':', '');
        const port = Number(next.port || (scheme === 'https' ? 443 : 80));
        if ((scheme !== 'http' && scheme !== 'https') || !allowed[scheme].includes(port)) {
          throw new RaError('connection', { detail: `${url.href} redirected to ${next.href}: only http and https on ports ${[...allowed.http, ...allowed.https].join(', ')} are followed` });
        }
        url = next;
        continue;
      }
      if (res.status !== 200) throw new RaError('incorrectResponse', { detail: `${url.href} answered HTTP ${res.status} from ${address}` });
      // RFC 8555 §8.3: the server SHOULD ignore whitespace characters at the end of the body.
      if (res.body.replace(/\s+$/, '') !== keyAuthorization) {
        throw new RaError('incorrectResponse', { detail: `${url.href} from ${address} did not return the key authorization` });
      }
      return { from: `${address}:${url.port || (url.protocol === 'https:' ? 443 : 80)}` };
    }
  };
}
