import type { FastifyRequest } from 'fastify';
import { constants, createPublicKey, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { calculateJwkThumbprint, decodeProtectedHeader, type JWK } from 'jose';
import { RaError } from '../../../shared/errors/index.js';
import type { AcmeContext } from './context.js';
import { accountUrl } from './context.js';
import type { AccountRecord } from './records.js';

// RFC 8555 §6.2: the algorithms an ACME server accepts. MAC algorithms and "none" are never
// accepted for request signatures (HS* are only for EAB, §7.3.4).
export const ACCOUNT_ALGS = ['RS256', 'RS384', 'RS512', 'PS256', 'ES256', 'ES384', 'ES512', 'EdDSA'] as const;
type AccountAlg = (typeof ACCOUNT_ALGS)[number];

const B64URL = /^[A-Za-z0-9_-]*$/;
/** RFC 7518 §3.4: the curve each ECDSA algorithm is defined on (OpenSSL names). */
const EC_CURVE: Partial<Record<AccountAlg, string>> = { ES256: 'prime256v1', ES384: 'secp384r1', ES512: 'secp521r1' };
const HASH: Record<AccountAlg, string | null> = { RS256: 'sha256', RS384: 'sha384', RS512: 'sha512', PS256: 'sha256', ES256: 'sha256', ES384: 'sha384', ES512: 'sha512', EdDSA: null };

/** Imported account keys by their JWK (every request of an account uses the same one): bounded. */
const keys = new Map<string, KeyObject>();
const KEYS_MAX = 10_000;

/** The node:crypto key of a JWK, checked to fit `alg` (RFC 7518 §3); throws when it does not. */
function accountKey(jwk: JWK, alg: string): KeyObject {
  const id = JSON.stringify(jwk);
  let key = keys.get(id);
  if (!key) {
    key = createPublicKey({ key: jwk as import('node:crypto').JsonWebKey, format: 'jwk' });
    if (keys.size >= KEYS_MAX) keys.delete(keys.keys().next().value!);
    keys.set(id, key);
  }
  const type = key.asymmetricKeyType;
  const a = alg as AccountAlg;
  // RFC 7518 §3.3/§3.5: RSA keys of at least 2048 bits.
  const rsaOk = () => (type === 'rsa' || (a === 'PS256' && type === 'rsa-pss')) && (key.asymmetricKeyDetails?.modulusLength ?? 0) >= 2048;
  const fits =
    a === 'EdDSA' ? type === 'ed25519' || type === 'ed448' : EC_CURVE[a] ? type === 'ec' && key.asymmetricKeyDetails?.namedCurve === EC_CURVE[a] : rsaOk();
  if (!fits) throw new Error(`a ${type} key cannot sign ${alg}`);
  return key;
}

/** RFC 7515 §5.2 signature check with node:crypto's one-shot verify (RFC 7518 §3: ECDSA signatures are r||s). */
function verifySignature(alg: AccountAlg, key: KeyObject, input: Buffer, signature: Buffer): boolean {
  try {
    if (alg === 'EdDSA') return cryptoVerify(null, input, key, signature);
    if (alg.startsWith('ES')) return cryptoVerify(HASH[alg], input, { key, dsaEncoding: 'ieee-p1363' }, signature);
    if (alg === 'PS256') return cryptoVerify('sha256', input, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST }, signature);
    return cryptoVerify(HASH[alg], input, key, signature);
  } catch {
    return false;
  }
}

export interface FlattenedJws {
  protected: string;
  payload: string;
  signature: string;
}

/**
 * Shape checks of a flattened JWS (RFC 7515 §7.2.2) as ACME uses it (RFC 8555 §6.2): protected,
 * payload and signature strings, no unprotected header, one signature; returns the decoded header.
 * `what` names the object in errors ("JWS", "inner JWS", "externalAccountBinding").
 */
export function parseFlattenedJws(v: unknown, what: string): { jws: FlattenedJws; header: Record<string, unknown> } {
  if (!isRecord(v) || typeof v.protected !== 'string' || typeof v.payload !== 'string' || typeof v.signature !== 'string') {
    throw new RaError('malformed', { detail: `${what} must be a flattened JWS with protected, payload and signature` });
  }
  if ('header' in v || 'signatures' in v) {
    throw new RaError('malformed', { detail: `${what} must not have an unprotected header or multiple signatures` });
  }
  let header: Record<string, unknown>;
  try {
    header = decodeProtectedHeader(v as { protected: string }) as Record<string, unknown>;
  } catch {
    throw new RaError('malformed', { detail: `${what} protected header is not valid base64url JSON` });
  }
  return { jws: v as unknown as FlattenedJws, header };
}

export interface AcmeRequest<T = unknown> {
  /** Decoded JSON payload; `undefined` for POST-as-GET (empty payload, RFC 8555 §6.3). */
  payload: T | undefined;
  protectedHeader: { alg: string; nonce: string; url: string; jwk?: JWK; kid?: string; [k: string]: unknown };
  /** The raw flattened JWS (needed for nested JWS: key change, EAB). */
  jws: FlattenedJws;
  jwk: JWK;
  thumbprint: string;
  account?: AccountRecord;
}

interface VerifyOpts {
  /** 'jwk' for newAccount (and revokeCert by certificate key); 'kid' for everything else; 'either' for revokeCert. */
  key: 'jwk' | 'kid' | 'either';
  /** Account must be status valid (RFC 8555 §7.3.6: deactivated accounts are refused). */
  requireValidAccount?: boolean;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The URL the client addressed, as the JWS "url" header must name it (RFC 8555 §6.4). */
export function requestUrl(ctx: AcmeContext, req: FastifyRequest): string {
  return ctx.baseUrl + req.url;
}

/**
 * Verifies an ACME POST: flattened JWS (§6.2), protected header fields, url (§6.4), nonce (§6.5),
 * jwk vs kid (§6.2), signature, and the account behind kid. Throws RaError with the right problem type.
 */
export async function verifyAcmeRequest<T = unknown>(ctx: AcmeContext, req: FastifyRequest, opts: VerifyOpts): Promise<AcmeRequest<T>> {
  const body = req.body;
  // RFC 8555 §6.2: the request body is a JWS in Flattened JSON Serialization, one signature, no unprotected header.
  const { jws, header } = parseFlattenedJws(body, 'JWS');
  const alg = header.alg;
  // RFC 8555 §6.2: alg MUST NOT be "none" nor a MAC algorithm.
  if (typeof alg !== 'string' || !(ACCOUNT_ALGS as readonly string[]).includes(alg)) {
    throw new RaError('badSignatureAlgorithm', {
      detail: `JWS algorithm ${JSON.stringify(alg)} is not supported; use one of ${ACCOUNT_ALGS.join(', ')}`,
      // RFC 8555 §6.2: the problem document MUST list the supported algorithms.
      algorithms: [...ACCOUNT_ALGS],
    });
  }
  // RFC 8555 §6.5: every JWS carries a fresh nonce issued by this server.
  if (typeof header.nonce !== 'string' || header.nonce.length === 0) {
    throw new RaError('badNonce', { detail: 'JWS has no nonce' });
  }
  // RFC 8555 §6.4: the url header must equal the URL the request was sent to.
  const expectUrl = requestUrl(ctx, req);
  if (typeof header.url !== 'string' || header.url !== expectUrl) {
    throw new RaError('unauthorized', { detail: `JWS url ${JSON.stringify(header.url)} does not match the request URL ${expectUrl}` });
  }
  const hasJwk = header.jwk !== undefined;
  const hasKid = header.kid !== undefined;
  // RFC 8555 §6.2: "jwk" and "kid" are mutually exclusive; one of them must be present.
  if (hasJwk === hasKid) throw new RaError('malformed', { detail: 'JWS must have exactly one of "jwk" and "kid"' });
  if (opts.key === 'jwk' && !hasJwk) throw new RaError('malformed', { detail: 'this resource requires a "jwk" header, not "kid"' });
  if (opts.key === 'kid' && !hasKid) throw new RaError('malformed', { detail: 'this resource requires a "kid" header, not "jwk"' });

  let jwk: JWK;
  let account: AccountRecord | undefined;
  if (hasJwk) {
    if (!isRecord(header.jwk)) throw new RaError('malformed', { detail: 'jwk header is not a JSON object' });
    jwk = header.jwk as JWK;
    if ('d' in jwk || 'k' in jwk) throw new RaError('badPublicKey', { detail: 'jwk must be a public asymmetric key' });
  } else {
    const kid = header.kid;
    const prefix = accountUrl(ctx, '');
    if (typeof kid !== 'string' || !kid.startsWith(prefix)) {
      throw new RaError('accountDoesNotExist', { detail: `kid ${JSON.stringify(kid)} is not an account URL of this server` });
    }
    account = await ctx.store.accounts.get(kid.slice(prefix.length));
    if (!account) throw new RaError('accountDoesNotExist', { detail: `no account at ${kid}` });
    jwk = account.jwk;
  }

  let key: KeyObject;
  try {
    key = accountKey(jwk, alg);
  } catch (e) {
    // RFC 8555 §6.7: badPublicKey is "signed by a public key the server does not support", which fits
    // only a key sent in "jwk". An account key was accepted when it was registered; a kid request whose
    // alg does not fit it was not signed by the account key (e.g. a client still using the key it rolled
    // over from, §7.3.5), the same failure as a signature that does not verify.
    if (account) throw new RaError('malformed', { detail: `JWS signature verification failed: ${alg} does not fit the account key`, cause: e });
    throw new RaError('badPublicKey', { detail: `the key cannot be used with ${alg}`, cause: e });
  }
  // RFC 7515 §4.1.11: no extension this server would have to understand (RFC 7797 b64 included).
  if ('crit' in header || 'b64' in header) throw new RaError('malformed', { detail: 'JWS "crit" and "b64" header parameters are not supported' });
  if (!B64URL.test(jws.protected) || !B64URL.test(jws.payload) || !B64URL.test(jws.signature)) {
    throw new RaError('malformed', { detail: 'JWS members must be base64url' });
  }
  // RFC 7515 §5.2: the signature is over ASCII(protected "." payload).
  if (!verifySignature(alg as AccountAlg, key, Buffer.from(`${jws.protected}.${jws.payload}`, 'ascii'), Buffer.from(jws.signature, 'base64url'))) {
    throw new RaError('malformed', { detail: 'JWS signature verification failed' });
  }
  const payloadBytes = Buffer.from(jws.payload, 'base64url');
  // RFC 8555 §6.5 / §6.7: the nonce is checked after the signature so a forged request cannot burn nonces;
  // an unknown or used nonce is badNonce, and the client retries with the nonce of the error response.
  if (!(await ctx.nonces.consume(header.nonce))) throw new RaError('badNonce', { detail: 'JWS nonce is unknown, expired or already used' });

  if (account && opts.requireValidAccount !== false && account.status !== 'valid') {
    throw new RaError('unauthorized', { detail: `account is ${account.status}` });
  }

  let payload: T | undefined;
  const text = Buffer.from(payloadBytes).toString('utf8');
  if (text !== '') {
    try {
      payload = JSON.parse(text) as T;
    } catch {
      throw new RaError('malformed', { detail: 'JWS payload is not JSON' });
    }
  }
  return {
    payload,
    protectedHeader: header as AcmeRequest['protectedHeader'],
    jws,
    jwk,
    thumbprint: account ? account.thumbprint : await calculateJwkThumbprint(jwk, 'sha256'),
    ...(account ? { account } : {}),
  };
}

/** For POST-as-GET on a resource owned by an account (RFC 8555 §6.3, §7.4). */
export function requireOwner(req: AcmeRequest, ownerAccountId: string): void {
  if (req.account?.id !== ownerAccountId) throw new RaError('unauthorized', { detail: 'the resource belongs to another account' });
}

export function requirePostAsGet(req: AcmeRequest): void {
  // RFC 8555 §6.3: a POST-as-GET has an empty payload (""), not "{}".
  if (req.payload !== undefined) throw new RaError('malformed', { detail: 'POST-as-GET request must have an empty payload' });
}
