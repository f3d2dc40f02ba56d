import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import type { JWK } from 'jose';
import { parseTopology, type Topology } from '../../shared/config/index.js';
import { RaError } from '../../shared/errors/index.js';
import {
  KeyRing,
  generateNodeKey,
  newRevokePayload,
  peekTyp,
  CRL_TYP,
  RESULT_TYP,
  signCrlMessage,
  signEdgeEnvelope,
  signResult,
  verifyCrlMessage,
  verifyEnvelope,
  verifyResult,
  wrapEnvelope,
  type CrlMessage,
  type NodeKey,
  type ResultPayload,
  type RevokePayload,
} from '../../shared/envelope/index.js';

// Revocation envelopes (kind 'revoke'), their results, and CRL messages: shapes are strict, chains
// are verified like issue envelopes, only the gateway answers revocations and publishes CRLs.

const YAML = `mesh: t
nodes:
  - {id: gw, role: gateway, dc: core}
  - {id: relay-1, role: relay, dc: dc-a, parent: gw}
  - {id: edge-a, role: edge, dc: dc-a, parent: relay-1, acme: {listen: "127.0.0.1:9001"}}
  - {id: edge-b, role: edge, dc: dc-a, parent: relay-1, acme: {listen: "127.0.0.1:9002"}}
`;
const NOW = Date.UTC(2030, 0, 1);
let topology: Topology;
let ring: KeyRing;
const k: Record<string, NodeKey> = {};

before(async () => {
  topology = parseTopology(YAML);
  for (const n of topology.nodes) k[n.id] = await generateNodeKey(n.id);
  ring = new KeyRing(Object.values(k).map((key): [string, JWK] => [key.kid, key.publicJwk]));
});

function revoke(over: Partial<RevokePayload> = {}): RevokePayload {
  return {
    ...newRevokePayload({
      origin: { node: 'edge-a', dc: 'dc-a' },
      serial: '7f01020304050607',
      reason: 1,
      requester: { method: 'issuer-account', account: 'acct-1', jwkThumbprint: 'thumb' },
      ttlMs: 300_000,
      now: NOW,
    }),
    ...over,
  } as RevokePayload;
}

const isRa = (type: string, reason?: string) => (e: unknown) => e instanceof RaError && e.type === type && (reason === undefined || e.reason === reason);

describe('unit: revoke envelopes', () => {
  test('ok/a revoke envelope verifies through a relay with its payload and path', async () => {
    const p = revoke();
    const inner = await signEdgeEnvelope(p, k['edge-a']!);
    const outer = await wrapEnvelope(inner, { node: 'relay-1', recvAt: NOW, policy: 'relay-1', decision: 'allow' }, k['relay-1']!, { ttlMs: 300_000, now: NOW });
    const v = await verifyEnvelope(outer, { topology, verifier: 'gw', keys: ring, now: NOW });
    assert.equal(v.payload.kind, 'revoke');
    assert.deepEqual(v.payload, p);
    assert.deepEqual(v.path, ['edge-a', 'relay-1']);
  });

  test('ok/certificate-key requester has no account', async () => {
    const p = revoke({ requester: { method: 'certificate-key', account: null, jwkThumbprint: 't' } });
    const v = await verifyEnvelope(await signEdgeEnvelope(p, k['edge-a']!), { topology, verifier: 'relay-1', keys: ring, now: NOW });
    assert.equal(v.payload.kind === 'revoke' && v.payload.requester.method, 'certificate-key');
  });

  const bad: Array<[string, Record<string, unknown>]> = [
    ['fail/reason 7', { reason: 7 }],
    ['fail/reason 11', { reason: 11 }],
    ['fail/serial upper-case', { serial: '7F01' }],
    ['fail/serial with a leading zero byte', { serial: '007f01' }],
    ['fail/serial longer than 20 bytes', { serial: '7f'.repeat(21) }],
    ['fail/unknown member', { csr: 'AAAA' }],
    ['fail/certificate-key with an account', { requester: { method: 'certificate-key', account: 'acct-1', jwkThumbprint: 't' } }],
    ['fail/account method without an account', { requester: { method: 'issuer-account', account: null, jwkThumbprint: 't' } }],
    ['fail/unknown kind', { kind: 'suspend' }],
  ];
  for (const [name, over] of bad) {
    test(`${name}: the edge refuses to sign it and a verifier refuses it as malformed`, async () => {
      const p = { ...revoke(), ...over } as RevokePayload;
      await assert.rejects(signEdgeEnvelope(p, k['edge-a']!), isRa('serverInternal', 'malformed'));
      // Forged by hand with the edge's key (the compact JWS the verifier sees).
      const { CompactSign } = await import('jose');
      const jws = await new CompactSign(new TextEncoder().encode(JSON.stringify(p))).setProtectedHeader({ alg: k['edge-a']!.alg, kid: 'edge-a', typ: 'ra-mesh+jws' }).sign(k['edge-a']!.privateKey);
      await assert.rejects(verifyEnvelope(jws, { topology, verifier: 'relay-1', keys: ring, now: NOW }), isRa('malformed', 'malformed'));
    });
  }

  test('fail/a revoke naming another edge as origin: the edge refuses to sign it, a verifier refuses it as path', async () => {
    const p = revoke({ origin: { node: 'edge-b', dc: 'dc-a' } });
    await assert.rejects(signEdgeEnvelope(p, k['edge-a']!), isRa('serverInternal', 'malformed'));
    const { CompactSign } = await import('jose');
    const jws = await new CompactSign(new TextEncoder().encode(JSON.stringify(p))).setProtectedHeader({ alg: k['edge-a']!.alg, kid: 'edge-a', typ: 'ra-mesh+jws' }).sign(k['edge-a']!.privateKey);
    await assert.rejects(verifyEnvelope(jws, { topology, verifier: 'relay-1', keys: ring, now: NOW }), isRa('unauthorized', 'path'));
  });
});

describe('unit: revoke results', () => {
  const result = (over: Partial<ResultPayload> = {}): ResultPayload => ({
    v: 1,
    id: '11111111-1111-4111-8111-111111111111',
    edge: 'edge-a',
    kind: 'revoke',
    status: 'valid',
    revocation: { serial: '7f01', reason: 1, revokedAt: new Date(NOW).toISOString() },
    hops: [],
    gateway: { node: 'gw', recvAt: NOW, sentAt: NOW },
    iat: NOW / 1000,
    ...over,
  });

  test('ok/a valid revoke result from the gateway', async () => {
    const r = await verifyResult(await signResult(result(), k.gw!), { topology, edge: 'edge-a', keys: ring, now: NOW });
    assert.equal(r.kind, 'revoke');
    assert.equal(r.revocation?.serial, '7f01');
  });

  test('ok/an invalid revoke result carries a problem', async () => {
    const r = result({ status: 'invalid', problem: { type: 'urn:ietf:params:acme:error:alreadyRevoked', detail: 'x', status: 400 } });
    delete r.revocation;
    assert.equal((await verifyResult(await signResult(r, k.gw!), { topology, edge: 'edge-a', keys: ring, now: NOW })).status, 'invalid');
  });

  test('fail/a valid revoke result without a revocation, or with a certificate, is refused', async () => {
    const none = result();
    delete none.revocation;
    await assert.rejects(signResult(none, k.gw!), isRa('serverInternal', 'malformed'));
    await assert.rejects(signResult(result({ certificate: 'PEM' }), k.gw!), isRa('serverInternal', 'malformed'));
    // A certificate result may not carry a revocation either.
    await assert.rejects(signResult(result({ kind: undefined, certificate: 'PEM' }), k.gw!), isRa('serverInternal', 'malformed'));
  });

  test('fail/a revoke answer signed by a relay is wrong-parent', async () => {
    const r = result({ status: 'invalid', problem: { type: 'urn:ietf:params:acme:error:unauthorized', detail: 'x', status: 403 }, gateway: { node: 'relay-1', recvAt: NOW, sentAt: NOW } });
    delete r.revocation;
    await assert.rejects(verifyResult(await signResult(r, k['relay-1']!), { topology, edge: 'edge-a', keys: ring, now: NOW }), isRa('unauthorized', 'wrong-parent'));
  });
});

describe('unit: CRL messages', () => {
  const msg = (over: Partial<CrlMessage> = {}): CrlMessage => ({ v: 1, kind: 'crl', gateway: 'gw', number: 3, thisUpdate: NOW / 1000, nextUpdate: NOW / 1000 + 86_400, crl: 'MIIB', iat: NOW / 1000, ...over });

  test('ok/signed by the gateway, told apart from results by typ', async () => {
    const jws = await signCrlMessage(msg(), k.gw!);
    assert.equal(peekTyp(jws), CRL_TYP);
    assert.notEqual(CRL_TYP, RESULT_TYP);
    assert.deepEqual(await verifyCrlMessage(jws, { topology, keys: ring, now: NOW }), msg());
    // Not a result.
    await assert.rejects(verifyResult(jws, { topology, edge: 'edge-a', keys: ring, now: NOW }), isRa('malformed', 'typ'));
  });

  test('fail/signed by a relay is wrong-parent; a bad shape is malformed; tampering breaks the signature', async () => {
    await assert.rejects(verifyCrlMessage(await signCrlMessage(msg({ gateway: 'relay-1' }), k['relay-1']!), { topology, keys: ring, now: NOW }), isRa('unauthorized', 'wrong-parent'));
    await assert.rejects(signCrlMessage(msg({ nextUpdate: NOW / 1000 - 1 }), k.gw!), isRa('serverInternal', 'malformed'));
    await assert.rejects(signCrlMessage(msg({ number: 0 }), k.gw!), isRa('serverInternal', 'malformed'));
    const [h, p, s] = (await signCrlMessage(msg(), k.gw!)).split('.');
    const forged = Buffer.from(JSON.stringify({ ...msg(), number: 99 })).toString('base64url');
    assert.notEqual(forged, p);
    await assert.rejects(verifyCrlMessage(`${h}.${forged}.${s}`, { topology, keys: ring, now: NOW }), isRa('unauthorized', 'bad-signature'));
  });
});
