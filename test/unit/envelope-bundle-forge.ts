import { sign as cryptoSign, KeyObject } from 'node:crypto';
import { ENVELOPE_TYP, BUNDLE_TYP, type NodeKey } from '../../shared/envelope/index.js';

// Forgeries for envelope-bundle.test.ts: JWS the library's own signing functions refuse to make.

function signRaw(header: Record<string, unknown>, payload: unknown, key: NodeKey): string {
  const h = Buffer.from(JSON.stringify(header)).toString('base64url');
  const p = Buffer.from(JSON.stringify(payload)).toString('base64url');
  const input = Buffer.from(`${h}.${p}`, 'ascii');
  const k = KeyObject.from(key.privateKey as unknown as Parameters<typeof KeyObject.from>[0]);
  const sig = key.alg === 'EdDSA' ? cryptoSign(null, input, k) : cryptoSign('sha256', input, { key: k, dsaEncoding: 'ieee-p1363' });
  return `${h}.${p}.${sig.toString('base64url')}`;
}

/** A bundle layer signed by `key` (e.g. an edge's), which bundleEnvelopes would refuse for a non-relay only at verification. */
export function edgeBundle(key: NodeKey, items: string[]): string {
  const now = Math.floor(Date.UTC(2030, 0, 1) / 1000);
  return signRaw({ alg: key.alg, kid: key.kid, typ: BUNDLE_TYP }, { v: 1, bundle: items, hop: { node: key.kid, recvAt: now * 1000, sentAt: now * 1000, policy: 'p', decision: 'allow' }, iat: now, exp: now + 300 }, key);
}

/** The same payload re-signed under the envelope typ. */
export function retyped(jws: string, key: NodeKey): string {
  const payload = JSON.parse(Buffer.from(jws.split('.')[1]!, 'base64url').toString()) as unknown;
  return signRaw({ alg: key.alg, kid: key.kid, typ: ENVELOPE_TYP }, payload, key);
}
