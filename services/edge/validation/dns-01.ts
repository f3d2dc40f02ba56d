import { createHash } from 'node:crypto';
import { RaError } from '../../../shared/errors/index.js';
import type { SegmentResolver } from './resolver.js';
import type { Validator } from './validators.js';

/** RFC 8555 §8.4 dns-01: a TXT record at _acme-challenge.<domain> holding base64url(SHA-256(keyAuthorization)). */
export function dns01Validator(resolver: SegmentResolver): Validator {
  return async ({ identifier, keyAuthorization }) => {
    const name = `_acme-challenge.${identifier.value}`;
    const want = createHash('sha256').update(keyAuthorization).digest('base64url');
    const records = await resolver.txt(name);
    if (!records.includes(want)) {
      throw new RaError('incorrectResponse', {
        detail: records.length === 0 ? `no TXT record at ${name}` : `none of the ${records.length} TXT records at ${name} matches the key authorization`,
      });
    }
    return { from: name };
  };
}
