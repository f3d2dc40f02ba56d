import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { calculateJwkThumbprint, importJWK, type JWK } from 'jose';
import { parseTopology } from '../../shared/config/index.js';
import { jwkAlg, KeyRing, loadOrCreateNodeKey, nodeKeyAlg, rotatePromote, rotateRetire, rotateStart, type NodeKey } from '../../shared/envelope/index.js';
import { signJson, verifyLayer } from '../../shared/envelope/jws.js';
import { RaError } from '../../shared/errors/index.js';

// Key rotation with overlap: rotate (current + next accepted), promote (next is current, prev still
// accepted), retire (prev refused). And pinned thumbprints: a key the topology does not pin is refused.

const topology = parseTopology('mesh: t\nnodes:\n  - {id: gw, role: gateway, dc: core}\n  - {id: relay-r, role: relay, dc: a, parent: gw}\n', 't.yaml', '/tmp');
const TYP = 'ra-mesh+jws';

async function keyFromFile(file: string, kid: string): Promise<NodeKey> {
  const jwk = JSON.parse(await readFile(file, 'utf8')) as JWK;
  const { d: _d, ...pub } = jwk;
  const alg = jwkAlg(jwk);
  return { kid, alg, privateKey: (await importJWK(jwk, alg)) as never, publicJwk: pub };
}

async function accepted(ring: KeyRing, key: NodeKey): Promise<boolean> {
  const jws = await signJson({ v: 1 }, key, TYP);
  return verifyLayer(jws, { topology, keys: ring, typ: TYP, what: 'test' }).then(
    () => true,
    () => false,
  );
}

describe('unit: node key rotation', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ra-mesh-rotate-'));
  });
  after(async () => rm(dir, { recursive: true, force: true }));

  test('ok/rotate -> promote -> retire, with overlap at every step', async () => {
    const old = await loadOrCreateNodeKey(dir, 'relay-r');
    const ids = ['gw', 'relay-r'];
    let ring = await KeyRing.fromDir(dir, ids);
    assert.equal(await accepted(ring, old), true);

    await rotateStart(dir, 'relay-r');
    const next = await keyFromFile(join(dir, 'relay-r.next.key.jwk'), 'relay-r');
    await ring.reload(dir, ids);
    assert.equal(ring.count('relay-r'), 2);
    assert.equal(await accepted(ring, old), true, 'current still accepted');
    assert.equal(await accepted(ring, next), true, 'next accepted before it is used');

    await rotatePromote(dir, 'relay-r');
    assert.deepEqual((await readdir(dir)).sort(), ['relay-r.key.jwk', 'relay-r.prev.pub.jwk', 'relay-r.pub.jwk']);
    const loaded = await loadOrCreateNodeKey(dir, 'relay-r');
    assert.deepEqual(loaded.publicJwk, next.publicJwk, 'the node signs with the promoted key after a restart');
    ring = await KeyRing.fromDir(dir, ids);
    assert.equal(await accepted(ring, next), true);
    assert.equal(await accepted(ring, old), true, 'a node not yet restarted still signs with the old key');

    await rotateRetire(dir, 'relay-r');
    await ring.reload(dir, ids);
    assert.equal(ring.count('relay-r'), 1);
    assert.equal(await accepted(ring, next), true);
    assert.equal(await accepted(ring, old), false, 'retired key refused');
  });

  const misuse: Array<[string, () => Promise<unknown>, RegExp]> = [
    ['fail/promote without a next key', () => rotatePromote(dir, 'relay-r'), /no next key to promote/],
    ['fail/retire without a previous key', () => rotateRetire(dir, 'relay-r'), /no previous key to retire/],
    ['fail/rotate a node that has no key', () => rotateStart(dir, 'gw'), /has no key/],
  ];
  for (const [name, call, re] of misuse) {
    test(name, async () => {
      await assert.rejects(call(), (e: unknown) => e instanceof RaError && re.test(e.detail));
    });
  }

  test('ok/a rotated key keeps the node\'s alg unless another is asked for; new keys follow envelope.algs', async () => {
    const d = await mkdtemp(join(tmpdir(), 'ra-mesh-rotate-alg-'));
    try {
      await loadOrCreateNodeKey(d, 'relay-r', 'EdDSA');
      await rotateStart(d, 'relay-r');
      assert.equal(jwkAlg(JSON.parse(await readFile(join(d, 'relay-r.next.pub.jwk'), 'utf8')) as JWK), 'EdDSA');
      await rotatePromote(d, 'relay-r');
      await rotateRetire(d, 'relay-r');
      await rotateStart(d, 'relay-r', 'ES256');
      assert.equal(jwkAlg(JSON.parse(await readFile(join(d, 'relay-r.next.pub.jwk'), 'utf8')) as JWK), 'ES256');
    } finally {
      await rm(d, { recursive: true, force: true });
    }
    assert.equal(nodeKeyAlg(topology), 'ES256');
    const onlyEd = parseTopology('mesh: t\nenvelope: {algs: [EdDSA]}\nnodes:\n  - {id: gw, role: gateway, dc: core}\n', 't.yaml', '/tmp');
    assert.equal(nodeKeyAlg(onlyEd), 'EdDSA');
  });

  test('fail/rotate twice without promote', async () => {
    await rotateStart(dir, 'relay-r');
    await assert.rejects(rotateStart(dir, 'relay-r'), (e: unknown) => e instanceof RaError && /already rotating/.test(e.detail));
  });

  test('ok/pinned thumbprints accept the pinned key; fail/an unpinned key file is refused, naming it', async () => {
    const current = JSON.parse(await readFile(join(dir, 'relay-r.pub.jwk'), 'utf8')) as JWK;
    const next = JSON.parse(await readFile(join(dir, 'relay-r.next.pub.jwk'), 'utf8')) as JWK;
    const pins = { 'relay-r': [await calculateJwkThumbprint(current), await calculateJwkThumbprint(next)] };
    assert.equal((await KeyRing.fromDir(dir, ['relay-r'], pins)).count('relay-r'), 2);
    await assert.rejects(
      KeyRing.fromDir(dir, ['relay-r'], { 'relay-r': [pins['relay-r'][0]!] }),
      (e: unknown) => e instanceof RaError && /relay-r\.next\.pub\.jwk \(thumbprint .*\) is not one of the keys the topology pins for "relay-r"/.test(e.detail),
    );
    const ring = await KeyRing.fromDir(dir, ['relay-r'], pins);
    // A failed reload leaves the ring as it was.
    await assert.rejects(ring.reload(dir, ['relay-r'], { 'relay-r': ['x'.repeat(43)] }));
    assert.equal(ring.count('relay-r'), 2);
  });
});
