import assert from 'node:assert/strict';
import { createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { test } from 'node:test';
import { oid, tlv } from '../../shared/pki/der.js';
import { importSpki } from '../../shared/pki/spki.js';

// importSpki reads RSA, EC and EdDSA SubjectPublicKeyInfos through a JWK (OpenSSL 3's DER decoder is the
// slow part of reading a CSR) and must give exactly the key and details createPublicKey(spki) gives; every
// other shape goes to the DER decoder, and whatever OpenSSL refuses stays refused.

const spkiOf = (k: KeyObject) => new Uint8Array(k.export({ type: 'spki', format: 'der' }));
const keyPair = (type: string, opts: Record<string, unknown>): KeyObject => (generateKeyPairSync as (t: string, o: unknown) => { publicKey: KeyObject })(type, opts).publicKey;

const ok: Array<[string, () => Uint8Array]> = [
  ['ok/RSA 2048', () => spkiOf(keyPair('rsa', { modulusLength: 2048 }))],
  ['ok/RSA 3072 with exponent 3', () => spkiOf(keyPair('rsa', { modulusLength: 3072, publicExponent: 3 }))],
  ['ok/RSA 1023 bits (details report the odd size)', () => spkiOf(keyPair('rsa', { modulusLength: 1023 }))],
  ['ok/RSA-PSS (left to the DER decoder)', () => spkiOf(keyPair('rsa-pss', { modulusLength: 2048 }))],
  ['ok/EC P-256', () => spkiOf(keyPair('ec', { namedCurve: 'P-256' }))],
  ['ok/EC P-384', () => spkiOf(keyPair('ec', { namedCurve: 'P-384' }))],
  ['ok/EC P-521', () => spkiOf(keyPair('ec', { namedCurve: 'P-521' }))],
  ['ok/EC secp256k1 (left to the DER decoder)', () => spkiOf(keyPair('ec', { namedCurve: 'secp256k1' }))],
  ['ok/EC P-256 with a compressed point (left to the DER decoder)', () => compressed(keyPair('ec', { namedCurve: 'P-256' }))],
  ['ok/Ed25519', () => spkiOf(keyPair('ed25519', {}))],
  ['ok/Ed448', () => spkiOf(keyPair('ed448', {}))],
];

for (const [name, make] of ok) {
  test(name, () => {
    const spki = make();
    const want = createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' });
    const got = importSpki(spki);
    assert.ok(got.key.equals(want), 'same key');
    assert.equal(got.key.asymmetricKeyType, want.asymmetricKeyType);
    assert.deepEqual(got.details, want.asymmetricKeyDetails);
  });
}

const fail: Array<[string, () => Uint8Array]> = [
  ['fail/an EC point off the curve', () => offCurve(keyPair('ec', { namedCurve: 'P-256' }))],
  ['fail/truncated', () => spkiOf(keyPair('ec', { namedCurve: 'P-256' })).subarray(0, 40)],
  ['fail/not DER at all', () => new TextEncoder().encode('not a key')],
];

for (const [name, make] of fail) {
  test(name, () => {
    const spki = make();
    assert.throws(() => createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' }), 'OpenSSL refuses it');
    assert.throws(() => importSpki(spki));
  });
}

test('ok/bytes after the SubjectPublicKeyInfo are left to the DER decoder, which gives its own answer', () => {
  const spki = spkiOf(keyPair('ed25519', {}));
  const withTail = new Uint8Array([...spki, 0x05, 0x00]);
  let openssl: KeyObject | Error;
  try {
    openssl = createPublicKey({ key: Buffer.from(withTail), format: 'der', type: 'spki' });
  } catch (e) {
    openssl = e as Error;
  }
  if (openssl instanceof Error) assert.throws(() => importSpki(withTail));
  else assert.ok(importSpki(withTail).key.equals(openssl));
});

/** The SPKI of an EC P-256 key with its point compressed (RFC 5480 §2.2 allows it; X9.62 02/03 prefix). */
function compressed(k: KeyObject): Uint8Array {
  const jwk = k.export({ format: 'jwk' });
  const x = Buffer.from(jwk.x!, 'base64url');
  const y = Buffer.from(jwk.y!, 'base64url');
  const point = new Uint8Array([(y[y.length - 1]! & 1) === 1 ? 0x03 : 0x02, ...x]);
  return tlv(0x30, tlv(0x30, oid('1.2.840.10045.2.1'), oid('1.2.840.10045.3.1.7')), tlv(0x03, new Uint8Array([0]), point));
}

/** A P-256 SPKI whose Y is changed, so the point is not on the curve. */
function offCurve(k: KeyObject): Uint8Array {
  const spki = spkiOf(k);
  spki[spki.length - 1] ^= 0x01;
  return spki;
}
