import { request } from 'node:http';
import { RaError } from '../../../shared/errors/index.js';
import type { SegmentResolver } from './resolver.js';
import type { Validator } from './validators.js';

const MAX_BODY = 8 * 1024;

function fetchOnce(address: string, port: number, host: string, path: string, timeoutMs: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: address, port, path, method: 'GET', headers: { Host: host, 'User-Agent': 'ra-mesh-edge-validator' }, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        body += d;
        if (body.length > MAX_BODY) req.destroy(new Error('response body too large'));
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`timeout after ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

/**
 * RFC 8555 §8.3 http-01: GET http://<domain>:<port>/.well-known/acme-challenge/<token> from inside the
 * segment; the body must be the key authorization (trailing whitespace ignored).
 */
export function http01Validator(resolver: SegmentResolver, port: number, timeoutMs = 10_000): Validator {
  return async ({ identifier, token, keyAuthorization }) => {
    const addresses = await resolver.addresses(identifier.value);
    const path = `/.well-known/acme-challenge/${token}`;
    let lastErr: RaError | undefined;
    for (const address of addresses) {
      let res: { status: number; body: string };
      try {
        res = await fetchOnce(address, port, identifier.type === 'ip' && address.includes(':') ? `[${identifier.value}]` : identifier.value, path, timeoutMs);
      } catch (e) {
        lastErr = new RaError('connection', { detail: `${identifier.value} (${address}:${port}): ${(e as Error).message}` });
        continue;
      }
      if (res.status !== 200) {
        throw new RaError('incorrectResponse', { detail: `http://${identifier.value}${path} answered HTTP ${res.status} from ${address}` });
      }
      // RFC 8555 §8.3: the server SHOULD ignore whitespace characters at the end of the body.
      if (res.body.replace(/\s+$/, '') !== keyAuthorization) {
        throw new RaError('incorrectResponse', { detail: `http://${identifier.value}${path} from ${address} did not return the key authorization` });
      }
      return { from: `${address}:${port}` };
    }
    throw lastErr ?? new RaError('connection', { detail: `no address to reach ${identifier.value}` });
  };
}
