import { KeyObject, sign as cryptoSign, verify as cryptoVerify } from 'node:crypto';
import type { CryptoKey } from 'jose';
import { RaError } from '../errors/index.js';
import type { Topology } from '../config/index.js';
import type { EnvelopeAlg, KeyRing, NodeKey } from './node-keys.js';
import { jwsHeaderSchema } from './schemas.js';

// The JWS layer shared by envelopes and results: strict compact parsing, header rules, signature.
//
// Signatures are made and checked with node:crypto's one-shot sign/verify (RFC 7515 §5.1/§5.2 over
// the ASCII signing input; RFC 8037 §3.1 Ed25519, RFC 7518 §3.4 ES256 with the 64-byte R||S form),
// synchronously: a Web Crypto call hops to the libuv thread pool and back, and under load that hop,
// once per layer of a nested envelope, cost far more than the ~50 us of the signature itself
// (profiled with node --cpu-prof in test/bench).

/** Reasons an envelope or result is refused (RaError.reason). */
export type EnvelopeRejection =
  | 'malformed'
  | 'oversize'
  | 'alg'
  | 'typ'
  | 'unknown-kid'
  | 'bad-signature'
  | 'wrong-parent'
  | 'path'
  | 'expired'
  | 'future'
  | 'replayed'
  | 'version';

const MALFORMED_REASONS: ReadonlySet<EnvelopeRejection> = new Set(['malformed', 'oversize', 'version', 'typ']);

/** The RaError of a refusal: type 'malformed' for malformed/oversize/version/typ, else 'unauthorized'. */
export function rejection(reason: EnvelopeRejection, detail: string, cause?: unknown): RaError {
  return new RaError(MALFORMED_REASONS.has(reason) ? 'malformed' : 'unauthorized', {
    reason,
    detail,
    ...(cause === undefined ? {} : { cause }),
  });
}

export function checkSize(jws: unknown, maxBytes: number, what: string): asserts jws is string {
  if (typeof jws !== 'string') throw rejection('malformed', `${what} is not a string`);
  // Cheap bound first (UTF-8 is at least one byte per UTF-16 unit), then the exact byte count.
  if (jws.length > maxBytes || Buffer.byteLength(jws, 'utf8') > maxBytes) {
    throw rejection('oversize', `${what} exceeds ${maxBytes} bytes`);
  }
}

const B64URL = /^[A-Za-z0-9_-]*$/;
const utf8 = new TextDecoder('utf-8', { fatal: true });

function decodeJson(part: string, what: string): unknown {
  try {
    return JSON.parse(utf8.decode(Buffer.from(part, 'base64url')));
  } catch (e) {
    throw rejection('malformed', `${what} is not base64url JSON`, e);
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export interface VerifiedLayer {
  kid: string;
  alg: string;
  /** The decoded JSON payload: an object, shape not yet checked. */
  payload: Record<string, unknown>;
}

export interface LayerContext {
  topology: Topology;
  keys: KeyRing;
  typ: string;
  /** Label for details, e.g. "envelope layer 2". */
  what: string;
}

/**
 * Verifies one compact JWS: shape, `alg` (never none, only the topology's algs, matching the
 * signer's key), `typ`, `kid` (a topology node whose key is in the ring), no other header members,
 * signature. Returns the signer and the decoded JSON payload.
 */
export async function verifyLayer(jws: string, ctx: LayerContext): Promise<VerifiedLayer> {
  const { what } = ctx;
  // RFC 7515 §7.1: header.payload.signature, each base64url (RFC 7515 §2: no padding). Located with
  // indexOf rather than split, and the payload (the inner envelope, the bulk of a nested JWS at every
  // layer) checked by decoding it and encoding it back, not by a regular expression: its bytes are
  // needed anyway, and the round trip also refuses the non-canonical forms a regex lets through.
  const dot1 = jws.indexOf('.');
  const dot2 = dot1 < 0 ? -1 : jws.indexOf('.', dot1 + 1);
  if (dot1 <= 0 || dot2 <= dot1 + 1 || jws.indexOf('.', dot2 + 1) !== -1) throw rejection('malformed', `${what} is not a compact JWS`);
  const headerPart = jws.slice(0, dot1);
  const payloadPart = jws.slice(dot1 + 1, dot2);
  const signaturePart = jws.slice(dot2 + 1);
  const payloadBytes = Buffer.from(payloadPart, 'base64url');
  if (!B64URL.test(headerPart) || !B64URL.test(signaturePart) || payloadBytes.toString('base64url') !== payloadPart) {
    throw rejection('malformed', `${what} is not a compact JWS`);
  }
  const header = decodeJson(headerPart, `${what} header`);
  if (!isRecord(header)) throw rejection('malformed', `${what} header is not a JSON object`);
  const alg = header.alg;
  // 'none' is refused here, whatever the configuration says, before any library sees the token.
  if (typeof alg !== 'string' || alg.toLowerCase() === 'none') {
    throw rejection('alg', alg === undefined ? `${what}: no alg` : `${what}: alg ${JSON.stringify(alg)} is never accepted`);
  }
  const allowed: readonly string[] = ctx.topology.config.envelope.algs;
  if (!allowed.includes(alg)) throw rejection('alg', `${what}: alg ${alg} is not allowed (allowed: ${allowed.join(', ')})`);
  if (header.typ !== ctx.typ) throw rejection('typ', `${what}: typ ${JSON.stringify(header.typ ?? null)}, expected "${ctx.typ}"`);
  const kid = header.kid;
  if (typeof kid !== 'string' || !ctx.topology.has(kid)) throw rejection('unknown-kid', `${what}: kid ${JSON.stringify(kid ?? null)} is not a node of the topology`);
  if (!ctx.keys.has(kid)) throw rejection('unknown-kid', `${what}: no public key for node "${kid}"`);
  const shape = jwsHeaderSchema.safeParse(header);
  if (!shape.success) {
    const extra = Object.keys(header).filter((k) => !['alg', 'kid', 'typ'].includes(k));
    throw rejection('malformed', `${what}: unexpected header ${extra.length ? `members ${extra.join(', ')}` : 'shape'}`);
  }
  const algs = ctx.keys.algs(kid);
  if (!algs.includes(alg as EnvelopeAlg)) throw rejection('alg', `${what}: node "${kid}" signs with ${algs.join(' or ')}, the header says ${alg}`);
  let keys: CryptoKey[];
  try {
    keys = await ctx.keys.candidates(kid, alg as EnvelopeAlg);
  } catch (e) {
    throw rejection('unknown-kid', `${what}: the public key of "${kid}" cannot be used`, e);
  }
  if (keys.length === 0) throw rejection('unknown-kid', `${what}: no public key for node "${kid}"`);
  // During a key rotation a node has two accepted keys (current first): either may have signed.
  // RFC 7515 §5.2: the signing input is ASCII(header '.' payload), here a prefix of the JWS (ASCII, checked above).
  const signingInput = Buffer.from(jws.slice(0, dot2), 'latin1');
  const signature = Buffer.from(signaturePart, 'base64url');
  let verified = false;
  let lastError: unknown;
  for (const key of keys) {
    try {
      if (verifyRaw(alg as EnvelopeAlg, signingInput, key, signature)) {
        verified = true;
        break;
      }
    } catch (e) {
      lastError = e;
    }
  }
  if (!verified) throw rejection('bad-signature', `${what}: signature of "${kid}" does not verify`, lastError);
  let payload: unknown;
  try {
    payload = JSON.parse(utf8.decode(payloadBytes));
  } catch (e) {
    throw rejection('malformed', `${what}: payload is not JSON`, e);
  }
  if (!isRecord(payload)) throw rejection('malformed', `${what}: payload is not a JSON object`);
  return { kid, alg, payload };
}

/** `v` other than 1 is another version of the format; a missing `v` is left to the shape check. */
export function checkVersion(payload: Record<string, unknown>, what: string): void {
  if ('v' in payload && payload.v !== 1) throw rejection('version', `${what}: version ${JSON.stringify(payload.v)} is not supported (expected 1)`);
}

export async function signJson(payload: unknown, key: NodeKey, typ: string): Promise<string> {
  const header = Buffer.from(JSON.stringify({ alg: key.alg, kid: key.kid, typ })).toString('base64url');
  const body = Buffer.from(JSON.stringify(payload)).toString('base64url');
  const signingInput = `${header}.${body}`;
  const k = keyObject(key.privateKey);
  const sig =
    key.alg === 'EdDSA'
      ? cryptoSign(null, Buffer.from(signingInput, 'ascii'), k)
      : cryptoSign('sha256', Buffer.from(signingInput, 'ascii'), { key: k, dsaEncoding: 'ieee-p1363' });
  return `${signingInput}.${sig.toString('base64url')}`;
}

/** The node:crypto key behind a Web Crypto key (also a non-extractable one), converted once. */
const keyObjects = new WeakMap<CryptoKey, KeyObject>();
function keyObject(k: CryptoKey): KeyObject {
  let o = keyObjects.get(k);
  if (!o) {
    o = KeyObject.from(k as unknown as Parameters<typeof KeyObject.from>[0]);
    keyObjects.set(k, o);
  }
  return o;
}

/** The key's type must be the alg's (an EC key never checks an EdDSA signature, nor the reverse). */
function verifyRaw(alg: EnvelopeAlg, input: Buffer, key: CryptoKey, signature: Buffer): boolean {
  const k = keyObject(key);
  if (alg === 'EdDSA') {
    if (k.asymmetricKeyType !== 'ed25519') return false;
    return cryptoVerify(null, input, k, signature);
  }
  if (k.asymmetricKeyType !== 'ec' || k.asymmetricKeyDetails?.namedCurve !== 'prime256v1') return false;
  // RFC 7518 §3.4: the JWS signature is R || S, 32 bytes each for P-256.
  if (signature.length !== 64) return false;
  return cryptoVerify('sha256', input, { key: k, dsaEncoding: 'ieee-p1363' }, signature);
}
