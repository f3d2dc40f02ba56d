import { createPublicKey, type AsymmetricKeyDetails, type JsonWebKey, type KeyObject } from 'node:crypto';
import { children, content, oidText, readTlv, type Tlv } from './der.js';

// SubjectPublicKeyInfo (RFC 5280 §4.1.2.7) -> node:crypto KeyObject, by way of a JWK where the key type
// allows. OpenSSL 3's DER decoder, behind createPublicKey({format: 'der', type: 'spki'}), costs 0.17-0.25 ms
// per key on the machines measured, and the gateway imports the key of every CSR it sees; a JWK import of
// the same key costs 0.01 ms (RSA), 0.02 ms (Ed25519) or 0.13 ms (EC, which checks the point is on the
// curve). The reader below is strict DER for the shapes it knows (RSA, named-curve EC with an uncompressed
// point, Ed25519, Ed448); anything else, and anything it cannot read, goes to the DER decoder unchanged,
// so what is accepted and refused stays OpenSSL's decision.

const OID_RSA = '1.2.840.113549.1.1.1';
const OID_EC = '1.2.840.10045.2.1';
const OID_ED25519 = '1.3.101.112';
const OID_ED448 = '1.3.101.113';
/** RFC 5480 §2.1.1.1 named curves: JWK crv, coordinate bytes, node:crypto's namedCurve. */
const CURVES: Record<string, { crv: string; bytes: number; namedCurve: string }> = {
  '1.2.840.10045.3.1.7': { crv: 'P-256', bytes: 32, namedCurve: 'prime256v1' },
  '1.3.132.0.34': { crv: 'P-384', bytes: 48, namedCurve: 'secp384r1' },
  '1.3.132.0.35': { crv: 'P-521', bytes: 66, namedCurve: 'secp521r1' },
};

export interface ImportedKey {
  key: KeyObject;
  /** What `key.asymmetricKeyDetails` would say (read from the DER when it was parsed here: asking OpenSSL costs ~0.06 ms). */
  details: AsymmetricKeyDetails;
}

/** The public key of a DER SubjectPublicKeyInfo; throws what createPublicKey throws for a key it refuses. */
export function importSpki(spki: Uint8Array): ImportedKey {
  let parsed: { jwk: JsonWebKey; details: AsymmetricKeyDetails } | undefined;
  try {
    parsed = readSpki(spki);
  } catch {
    parsed = undefined;
  }
  if (parsed) {
    try {
      return { key: createPublicKey({ key: parsed.jwk, format: 'jwk' }), details: parsed.details };
    } catch {
      // Refused as a JWK (e.g. an EC point off the curve): the DER decoder gives its own answer below.
    }
  }
  const key = createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' });
  return { key, details: key.asymmetricKeyDetails ?? {} };
}

function only(buf: Uint8Array, t: Tlv, tag: number, n: number): Tlv[] {
  if (t.tag !== tag) throw new Error('unexpected tag');
  const c = children(buf, t);
  if (c.length !== n) throw new Error('unexpected element count');
  return c;
}

/** A DER INTEGER's magnitude (positive and minimal, else it throws). */
function positiveInteger(buf: Uint8Array, t: Tlv): Uint8Array {
  if (t.tag !== 0x02) throw new Error('not an INTEGER');
  const b = content(buf, t);
  if (b.length === 0 || (b[0]! & 0x80) !== 0) throw new Error('not a positive INTEGER');
  if (b[0] === 0 && (b.length === 1 || (b[1]! & 0x80) === 0)) throw new Error('non-minimal INTEGER');
  return b[0] === 0 ? b.subarray(1) : b;
}

const b64u = (b: Uint8Array) => Buffer.from(b).toString('base64url');

/** The JWK of the SPKI's key and its details, or undefined for a shape left to the DER decoder. */
function readSpki(spki: Uint8Array): { jwk: JsonWebKey; details: AsymmetricKeyDetails } | undefined {
  const outer = readTlv(spki, 0);
  if (outer.end !== spki.length) return undefined;
  const [algTlv, keyTlv] = only(spki, outer, 0x30, 2) as [Tlv, Tlv];
  const alg = children(spki, algTlv);
  if (algTlv.tag !== 0x30 || alg.length < 1 || alg.length > 2 || alg[0]!.tag !== 0x06) return undefined;
  const oid = oidText(content(spki, alg[0]!));
  const params = alg[1];
  if (keyTlv.tag !== 0x03) return undefined;
  const bits = content(spki, keyTlv);
  if (bits.length < 1 || bits[0] !== 0) return undefined;
  const key = bits.subarray(1);

  if (oid === OID_RSA) {
    // RFC 8017 §A.1.1 RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }; parameters NULL (RFC 3279 §2.3.1).
    if (!params || params.tag !== 0x05 || params.end !== params.contentStart) return undefined;
    const seq = readTlv(key, 0);
    if (seq.end !== key.length) return undefined;
    const [nTlv, eTlv] = only(key, seq, 0x30, 2) as [Tlv, Tlv];
    const n = positiveInteger(key, nTlv);
    const e = positiveInteger(key, eTlv);
    const modulusLength = (n.length - 1) * 8 + (32 - Math.clz32(n[0]!));
    return { jwk: { kty: 'RSA', n: b64u(n), e: b64u(e) }, details: { modulusLength, publicExponent: BigInt(`0x${Buffer.from(e).toString('hex')}`) } };
  }
  if (oid === OID_EC) {
    // RFC 5480 §2.1.1: namedCurve parameters; §2.2: the uncompressed point 04 || X || Y.
    if (!params || params.tag !== 0x06) return undefined;
    const curve = CURVES[oidText(content(spki, params))];
    if (!curve || key.length !== 1 + 2 * curve.bytes || key[0] !== 0x04) return undefined;
    const x = key.subarray(1, 1 + curve.bytes);
    const y = key.subarray(1 + curve.bytes);
    return { jwk: { kty: 'EC', crv: curve.crv, x: b64u(x), y: b64u(y) }, details: { namedCurve: curve.namedCurve } };
  }
  // RFC 8410 §3: no parameters; the key is the raw public key.
  if (oid === OID_ED25519 && !params && key.length === 32) return { jwk: { kty: 'OKP', crv: 'Ed25519', x: b64u(key) }, details: {} };
  if (oid === OID_ED448 && !params && key.length === 57) return { jwk: { kty: 'OKP', crv: 'Ed448', x: b64u(key) }, details: {} };
  return undefined;
}
