import { calculateJwkThumbprint, flattenedVerify, type JWK } from 'jose';
import { parseFlattenedJws } from '../acme/jws.js';
import { RaError } from '../../../shared/errors/index.js';
import type { EabKeyRecord, EabStore } from './eab-store.js';

const EAB_ALGS = ['HS256', 'HS384', 'HS512'];

/**
 * RFC 8555 §7.3.4: checks the externalAccountBinding of a newAccount request and returns the key
 * record it names (still unbound). The caller binds it in the same write that creates the account.
 */
export async function verifyExternalAccountBinding(
  eab: unknown,
  opts: { store: EabStore; newAccountUrl: string; accountJwk: JWK },
): Promise<EabKeyRecord> {
  const { jws, header } = parseFlattenedJws(eab, 'externalAccountBinding');
  // RFC 8555 §7.3.4: a MAC algorithm, the EAB key id as kid, the newAccount URL, and no nonce.
  if (typeof header.alg !== 'string' || !EAB_ALGS.includes(header.alg)) {
    throw new RaError('badSignatureAlgorithm', { detail: `externalAccountBinding alg must be one of ${EAB_ALGS.join(', ')}`, algorithms: EAB_ALGS });
  }
  if ('nonce' in header) throw new RaError('malformed', { detail: 'externalAccountBinding must not carry a nonce' });
  if (header.url !== opts.newAccountUrl) throw new RaError('malformed', { detail: 'externalAccountBinding url must be the newAccount URL' });
  if (typeof header.kid !== 'string') throw new RaError('malformed', { detail: 'externalAccountBinding needs the EAB key id as kid' });
  const rec = await opts.store.keys.get(header.kid);
  if (!rec) throw new RaError('unauthorized', { detail: `unknown external account key "${header.kid}"` });
  if (rec.revoked) throw new RaError('unauthorized', { detail: `external account key "${header.kid}" is revoked` });
  // Each EAB key binds one account, once.
  if (rec.boundTo !== null) throw new RaError('unauthorized', { detail: `external account key "${header.kid}" is already bound to an account` });
  let payload: Uint8Array;
  try {
    ({ payload } = await flattenedVerify(jws, Buffer.from(rec.hmacKey, 'base64url'), {
      algorithms: EAB_ALGS,
    }));
  } catch (e) {
    throw new RaError('unauthorized', { detail: 'externalAccountBinding MAC does not verify', cause: e });
  }
  // RFC 8555 §7.3.4: the payload is the account's public key, the same as in the outer JWS.
  let inner: JWK;
  try {
    inner = JSON.parse(Buffer.from(payload).toString('utf8')) as JWK;
  } catch {
    throw new RaError('malformed', { detail: 'externalAccountBinding payload is not a JWK' });
  }
  if ((await calculateJwkThumbprint(inner).catch(() => '')) !== (await calculateJwkThumbprint(opts.accountJwk))) {
    throw new RaError('unauthorized', { detail: 'externalAccountBinding payload is not the account key' });
  }
  return rec;
}
