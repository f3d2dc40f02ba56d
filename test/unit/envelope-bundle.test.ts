import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import type { JWK } from 'jose';
import { parseTopology, type Topology } from '../../shared/config/index.js';
import { RaError } from '../../shared/errors/index.js';
import {
  bundleEnvelopes,
  BUNDLE_TYP,
  KeyRing,
  ReplayGuard,
  generateNodeKey,
  newEdgePayload,
  signEdgeEnvelope,
  verifyEnvelope,
  verifyMessage,
  wrapEnvelope,
  type NodeKey,
} from '../../shared/envelope/index.js';
import { bundleBytesAt } from '../../services/relay/relay-service.js';

// Bundle layers (envelope.ts): a relay countersigns several received envelopes at once; each request
// inside is verified, and accepted or rejected, on its own; a failure of the bundle layer itself
// refuses the whole message.
//   gw <- relay-2 <- relay-1 <- edge-a, edge-b;  gw <- relay-x <- edge-x
const YAML = `mesh: t
envelope: {bundle: {maxEnvelopes: 4, maxBytes: 16384}}
nodes:
  - {id: gw, role: gateway, dc: core}
  - {id: relay-2, role: relay, dc: dc-b, parent: gw}
  - {id: relay-1, role: relay, dc: dc-a, parent: relay-2}
  - {id: relay-x, role: relay, dc: dc-x, parent: gw}
  - {id: edge-a, role: edge, dc: dc-a, parent: relay-1, acme: {listen: "127.0.0.1:9001"}}
  - {id: edge-b, role: edge, dc: dc-a, parent: relay-1, acme: {listen: "127.0.0.1:9002"}}
  - {id: edge-x, role: edge, dc: dc-x, parent: relay-x, acme: {listen: "127.0.0.1:9003"}}
`;
const TTL = 5 * 60_000;
const NOW = Date.UTC(2030, 0, 1);
let topology: Topology;
let ring: KeyRing;
const k: Record<string, NodeKey> = {};

before(async () => {
  topology = parseTopology(YAML);
  for (const n of topology.nodes) k[n.id] = await generateNodeKey(n.id, n.id === 'relay-2' ? 'ES256' : 'EdDSA');
  ring = new KeyRing(Object.values(k).map((key): [string, JWK] => [key.kid, key.publicJwk]));
});

async function edge(id: string, over: { now?: number; id?: string; name?: string } = {}): Promise<{ id: string; jws: string }> {
  const node = topology.node(id);
  const p = newEdgePayload({
    origin: { node: id, dc: node.dc },
    csr: Buffer.from('a CSR would be here').toString('base64url'),
    identifiers: [{ type: 'dns', value: over.name ?? 'app.corp.test', validation: { method: 'http-01', at: new Date(NOW).toISOString(), from: '10.0.0.7:80' } }],
    account: { id: 'acct-1', eab: null, jwkThumbprint: 'thumbprint' },
    requested: { notBefore: null, notAfter: null },
    renewalOf: null,
    ttlMs: TTL,
    now: over.now ?? NOW,
    ...(over.id ? { id: over.id } : {}),
  });
  return { id: p.id, jws: await signEdgeEnvelope(p, k[id]!) };
}
const hop = (node: string, recvAt = NOW + 5) => ({ node, recvAt, policy: `${node}@sha256:abc`, decision: 'allow' as const });
const bundle = (by: string, items: string[], exclude?: string[]) => bundleEnvelopes(items, hop(by), k[by]!, { ttlMs: TTL, now: NOW + 10, ...(exclude ? { exclude } : {}) });
const wrap = (by: string, inner: string) => wrapEnvelope(inner, hop(by), k[by]!, { ttlMs: TTL, now: NOW + 10 });
const check = (jws: string, verifier: string, replay?: ReplayGuard) => verifyMessage(jws, { topology, verifier, keys: ring, now: NOW + 100, ...(replay ? { replay } : {}) });

function isRejection(e: unknown, reason: string): boolean {
  return e instanceof RaError && e.reason === reason;
}

test('ok/a bundle of lone envelopes and of relay layers: every request, with the bundle hop on its path', async () => {
  const a = await edge('edge-a');
  const b = await edge('edge-b');
  const c = await edge('edge-a');
  const inner = await bundle('relay-1', [a.jws, b.jws]);
  const outer = await bundle('relay-2', [inner, await wrap('relay-1', c.jws)]);
  const head = JSON.parse(Buffer.from(outer.split('.')[0]!, 'base64url').toString()) as { typ: string };
  assert.equal(head.typ, BUNDLE_TYP);
  const msg = await check(outer, 'gw');
  assert.equal(msg.bundled, true);
  assert.deepEqual(msg.envelopes.map((e) => e.payload.id), [a.id, b.id, c.id]);
  for (const e of msg.envelopes) {
    assert.deepEqual(e.path, [e.payload.origin.node, 'relay-1', 'relay-2']);
    assert.deepEqual(e.hops.map((h) => h.node), ['relay-1', 'relay-2']);
  }
  assert.deepEqual(msg.rejected, []);
  // The relay below the gateway verifies the same bundle as received from relay-1.
  assert.equal((await check(inner, 'relay-2')).envelopes.length, 2);
});

test('ok/a request inside a bundle that does not verify is rejected alone, with its id when it was read', async () => {
  const good = await edge('edge-a');
  const expired = await edge('edge-b', { now: NOW - 2 * TTL });
  const stranger = await edge('edge-x'); // relay-x's child, not relay-1's
  // The signature's first character changed (its last one carries padding bits a decoder may ignore).
  const forged = (await edge('edge-a')).jws.replace(/\.([^.])([^.]*)$/, (_m, ch: string, rest: string) => `.${ch === 'A' ? 'B' : 'A'}${rest}`);
  const msg = await check(await bundle('relay-1', [good.jws, expired.jws, stranger.jws, forged]), 'relay-2');
  assert.deepEqual(msg.envelopes.map((e) => e.payload.id), [good.id]);
  assert.deepEqual(msg.rejected.map((r) => r.error.reason), ['expired', 'path', 'bad-signature']);
  assert.equal(msg.rejected[0]!.id, expired.id);
  assert.equal(msg.rejected[2]!.id, undefined, 'nothing of a forged request is taken as its id');
});

test('ok/requests a relay excluded are not handled above it (nor asked of the replay guard)', async () => {
  const a = await edge('edge-a');
  const b = await edge('edge-b');
  const replay = new ReplayGuard({ ttlMs: TTL, max: 100 });
  const msg = await check(await bundle('relay-2', [await bundle('relay-1', [a.jws, b.jws])], [b.id]), 'gw', replay);
  assert.deepEqual(msg.envelopes.map((e) => e.payload.id), [a.id]);
  assert.deepEqual(msg.excluded, [b.id]);
  assert.equal(replay.size, 1);
});

test('ok/the same request twice in a bundle: the second is a redelivery; other content under its id is a replay', async () => {
  const a = await edge('edge-a');
  const again = await edge('edge-a', { id: a.id });
  const msg = await check(await bundle('relay-1', [a.jws, a.jws]), 'relay-2', new ReplayGuard({ ttlMs: TTL, max: 100 }));
  assert.deepEqual(msg.envelopes.map((e) => e.redelivery), [false, true]);
  // `again` re-signs the same content: a redelivery too. A different request under a's id is a replay.
  const other = await edge('edge-a', { id: a.id, name: 'other.corp.test' });
  const msg2 = await check(await bundle('relay-1', [a.jws, again.jws, other.jws]), 'relay-2', new ReplayGuard({ ttlMs: TTL, max: 100 }));
  assert.deepEqual(msg2.envelopes.map((e) => e.redelivery), [false, true]);
  assert.deepEqual(msg2.rejected.map((r) => [r.error.reason, r.id]), [['replayed', a.id]]);
});

const failCases: Array<[string, string, () => Promise<string>, string]> = [
  ['fail/a bundle signed by an edge', 'path', async () => (await import('./envelope-bundle-forge.js')).edgeBundle(k['edge-a']!, [(await edge('edge-a')).jws]), 'relay-1'],
  ['fail/a bundle from a node that is not a child of the verifier', 'wrong-parent', async () => bundle('relay-x', [(await edge('edge-x')).jws]), 'relay-2'],
  ['fail/more items than bundle.maxEnvelopes', 'oversize', async () => bundle('relay-1', await Promise.all([1, 2, 3, 4, 5].map(async () => (await edge('edge-a')).jws))), 'relay-2'],
  [
    'fail/a bundle over bundle.maxBytes (checked before parsing)',
    'oversize',
    async () => {
      const b = await bundle('relay-1', [(await edge('edge-a')).jws]);
      const [h, p, s] = b.split('.');
      return `${h}.${p}${'A'.repeat(16_384)}.${s}`;
    },
    'relay-2',
  ],
  [
    'fail/a lone envelope over envelope.maxBytes is not let in by the bundle bound',
    'oversize',
    async () => {
      const e = (await edge('edge-a')).jws;
      const [h, p, s] = e.split('.');
      return `${h}.${p}${'A'.repeat(70_000)}.${s}`;
    },
    'relay-1',
  ],
  [
    'fail/a bundle whose typ says envelope',
    'malformed',
    async () => (await import('./envelope-bundle-forge.js')).retyped(await bundle('relay-1', [(await edge('edge-a')).jws]), k['relay-1']!),
    'relay-2',
  ],
];
for (const [name, reason, make, verifier] of failCases) {
  test(name, async () => {
    const jws = await make();
    await assert.rejects(check(jws, verifier), (e: unknown) => isRejection(e, reason) || assert.fail(`expected ${reason}, got ${(e as RaError).reason}: ${(e as RaError).detail}`));
  });
}

test('fail/verifyEnvelope takes no bundle (a caller that expects one request)', async () => {
  await assert.rejects(verifyEnvelope(await bundle('relay-1', [(await edge('edge-a')).jws]), { topology, verifier: 'relay-2', keys: ring, now: NOW + 100 }), (e: unknown) => isRejection(e, 'malformed'));
});

test('ok/a relay\'s bundle bound leaves room for every bundle layer above it', () => {
  // relay-2 sits under the gateway; relay-1 has relay-2 above it.
  assert.equal(bundleBytesAt(topology, 'relay-2'), 16_384);
  const low = bundleBytesAt(topology, 'relay-1');
  assert.ok(low * (4 / 3) + 2048 <= 16_384, `relay-1's ${low} bytes, wrapped once more, stay within 16384`);
});
