import type { FastifyRequest } from 'fastify';
import { calculateJwkThumbprint, decodeProtectedHeader, flattenedVerify, importJWK, type JWK } from 'jose';
import { RaError } from '../../../shared/errors/index.js';
import type { AcmeContext } from './context.js';
import { accountUrl } from './context.js';
import type { AccountRecord } from './records.js';

// RFC 8555 §6.2: the algorithms an ACME server accepts. MAC algorithms and "none" are never
// accepted for request signatures (HS* are only for EAB, §7.3.4).
export const ACCOUNT_ALGS = ['RS256', 'RS384', 'RS512', 'PS256', 'ES256', 'ES384', 'ES512', 'EdDSA'] as const;

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

  let key: Awaited<ReturnType<typeof importJWK>>;
  try {
    key = await importJWK(jwk, alg);
  } catch (e) {
    // RFC 8555 §6.7: badPublicKey is "signed by a public key the server does not support", which fits
    // only a key sent in "jwk". An account key was accepted when it was registered; a kid request whose
    // alg does not fit it was not signed by the account key (e.g. a client still using the key it rolled
    // over from, §7.3.5), the same failure as a signature that does not verify.
    if (account) throw new RaError('malformed', { detail: `JWS signature verification failed: ${alg} does not fit the account key`, cause: e });
    throw new RaError('badPublicKey', { detail: `the key cannot be used with ${alg}`, cause: e });
  }
  let payloadBytes: Uint8Array;
  try {
    ({ payload: payloadBytes } = await flattenedVerify(jws, key, {
      algorithms: [...ACCOUNT_ALGS],
    }));
  } catch (e) {
    throw new RaError('malformed', { detail: 'JWS signature verification failed', cause: e });
  }
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
    thumbprint: await calculateJwkThumbprint(jwk, 'sha256'),
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
