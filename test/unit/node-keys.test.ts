import assert from 'node:assert/strict';
import { chmod, mkdtemp, readdir, readFile, rm, stat, unlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { CompactSign, compactVerify } from 'jose';
import { RaError } from '../../shared/errors/index.js';
import { DEFAULT_ENVELOPE_ALG, generateNodeKey, KeyRing, loadOrCreateNodeKey } from '../../shared/envelope/index.js';

let tmp: string;
before(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'ra-mesh-keys-'));
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

async function signs(key: Awaited<ReturnType<typeof generateNodeKey>>, ring: KeyRing): Promise<boolean> {
  const jws = await new CompactSign(new TextEncoder().encode('x')).setProtectedHeader({ alg: key.alg, kid: key.kid }).sign(key.privateKey);
  const pub = await ring.get(key.kid);
  if (!pub) return false;
  return compactVerify(jws, pub).then(
    () => true,
    () => false,
  );
}

test('ok/generateNodeKey: ES256 by default, EdDSA on request, public JWK with kid and alg', async () => {
  const ec = await generateNodeKey('relay-1');
  assert.equal(ec.alg, 'ES256');
  assert.equal(DEFAULT_ENVELOPE_ALG, 'ES256');
  assert.deepEqual(Object.keys(ec.publicJwk).sort(), ['alg', 'crv', 'kid', 'kty', 'x', 'y']);
  assert.equal(ec.publicJwk.crv, 'P-256');
  assert.equal(ec.publicJwk.alg, 'ES256');
  assert.equal(ec.publicJwk.kid, 'relay-1');
  assert.equal(ec.publicJwk.d, undefined);
  assert.equal(ec.privateKey.extractable, false);
  const ed = await generateNodeKey('edge-a', 'EdDSA');
  assert.equal(ed.alg, 'EdDSA');
  assert.deepEqual(Object.keys(ed.publicJwk).sort(), ['alg', 'crv', 'kid', 'kty', 'x']);
  assert.equal(ed.publicJwk.crv, 'Ed25519');
  assert.equal(ed.publicJwk.kid, 'edge-a');
  assert.equal(ed.privateKey.extractable, false);
  const ring = new KeyRing([
    ['edge-a', ed.publicJwk],
    ['relay-1', ec.publicJwk],
  ]);
  assert.ok(await signs(ed, ring));
  assert.ok(await signs(ec, ring));
});

test('ok/loadOrCreateNodeKey persists the key (0600 in a 0700 folder) and reloads the same one', async () => {
  const dir = path.join(tmp, 'state', 'keys');
  const a = await loadOrCreateNodeKey(dir, 'gw');
  assert.equal((await stat(dir)).mode & 0o777, 0o700);
  assert.equal((await stat(path.join(dir, 'gw.key.jwk'))).mode & 0o777, 0o600);
  const priv = JSON.parse(await readFile(path.join(dir, 'gw.key.jwk'), 'utf8'));
  assert.equal(priv.kid, 'gw');
  assert.equal(priv.alg, 'ES256');
  assert.equal(typeof priv.d, 'string');
  const pub = JSON.parse(await readFile(path.join(dir, 'gw.pub.jwk'), 'utf8'));
  assert.deepEqual(pub, a.publicJwk);
  assert.equal(pub.d, undefined);

  const b = await loadOrCreateNodeKey(dir, 'gw');
  assert.deepEqual(b.publicJwk, a.publicJwk);
  // The reloaded private key signs for the same public key.
  assert.ok(await signs(b, new KeyRing([['gw', a.publicJwk]])));
  // No temporary files left behind.
  assert.deepEqual((await readdir(dir)).sort(), ['gw.key.jwk', 'gw.pub.jwk']);
});

test('ok/loadOrCreateNodeKey ES256, keeps the stored alg, rewrites a lost public file, tightens a loose mode', async () => {
  const dir = path.join(tmp, 'es');
  const a = await loadOrCreateNodeKey(dir, 'relay-2', 'ES256');
  assert.equal(a.alg, 'ES256');
  // Without an alg, the stored key's alg is used.
  assert.equal((await loadOrCreateNodeKey(dir, 'relay-2')).alg, 'ES256');
  await unlink(path.join(dir, 'relay-2.pub.jwk'));
  await chmod(path.join(dir, 'relay-2.key.jwk'), 0o644);
  const b = await loadOrCreateNodeKey(dir, 'relay-2');
  assert.deepEqual(b.publicJwk, a.publicJwk);
  assert.deepEqual(JSON.parse(await readFile(path.join(dir, 'relay-2.pub.jwk'), 'utf8')), a.publicJwk);
  assert.equal((await stat(path.join(dir, 'relay-2.key.jwk'))).mode & 0o777, 0o600);
});

test('ok/loadOrCreateNodeKey: concurrent callers end with one key', async () => {
  const dir = path.join(tmp, 'race');
  const keys = await Promise.all(Array.from({ length: 8 }, () => loadOrCreateNodeKey(dir, 'edge-b')));
  for (const k of keys) assert.deepEqual(k.publicJwk, keys[0]!.publicJwk);
  const onDisk = await loadOrCreateNodeKey(dir, 'edge-b');
  assert.deepEqual(onDisk.publicJwk, keys[0]!.publicJwk);
  assert.deepEqual((await readdir(dir)).sort(), ['edge-b.key.jwk', 'edge-b.pub.jwk']);
});

test('fail/loadOrCreateNodeKey: alg mismatch, bad kid, file for another kid', async () => {
  const dir = path.join(tmp, 'bad');
  await loadOrCreateNodeKey(dir, 'edge-c');
  await assert.rejects(loadOrCreateNodeKey(dir, 'edge-c', 'EdDSA'), (e: unknown) => e instanceof RaError && /holds an ES256 key/.test(e.detail));
  // A key on disk keeps its alg: loading without one asked for never changes it.
  await loadOrCreateNodeKey(dir, 'edge-f', 'EdDSA');
  assert.equal((await loadOrCreateNodeKey(dir, 'edge-f')).alg, 'EdDSA');
  await assert.rejects(loadOrCreateNodeKey(dir, '../etc/passwd'), (e: unknown) => e instanceof RaError && /invalid key id/.test(e.detail));
  await writeFile(path.join(dir, 'edge-d.key.jwk'), await readFile(path.join(dir, 'edge-c.key.jwk')));
  await assert.rejects(loadOrCreateNodeKey(dir, 'edge-d'), (e: unknown) => e instanceof RaError && /for kid "edge-c"/.test(e.detail));
  await writeFile(path.join(dir, 'edge-e.key.jwk'), 'not json');
  await assert.rejects(loadOrCreateNodeKey(dir, 'edge-e'), (e: unknown) => e instanceof RaError && /is not a JWK/.test(e.detail));
});

test('ok/KeyRing.fromDir reads the public keys that exist and skips the rest', async () => {
  const dir = path.join(tmp, 'ring');
  const gw = await loadOrCreateNodeKey(dir, 'gw');
  const relay = await loadOrCreateNodeKey(dir, 'relay-1', 'ES256');
  const ring = await KeyRing.fromDir(dir, ['gw', 'relay-1', 'edge-missing']);
  assert.ok(ring.has('gw'));
  assert.ok(ring.has('relay-1'));
  assert.equal(ring.has('edge-missing'), false);
  assert.equal(await ring.get('edge-missing'), undefined);
  assert.equal(ring.alg('relay-1'), 'ES256');
  assert.deepEqual(ring.kids().sort(), ['gw', 'relay-1']);
  assert.ok(await signs(gw, ring));
  assert.ok(await signs(relay, ring));
  // Imports are cached.
  assert.equal(await ring.get('gw'), await ring.get('gw'));
});

test('fail/KeyRing refuses private keys, mismatched kids and foreign key types', async () => {
  const dir = path.join(tmp, 'ring-bad');
  await loadOrCreateNodeKey(dir, 'gw');
  const priv = JSON.parse(await readFile(path.join(dir, 'gw.key.jwk'), 'utf8'));
  assert.throws(() => new KeyRing().add(priv), (e: unknown) => e instanceof RaError && /private key material/.test(e.detail));
  const pub = (await generateNodeKey('edge-a')).publicJwk;
  assert.throws(() => new KeyRing([['edge-b', pub]]), (e: unknown) => e instanceof RaError && /kid "edge-a"/.test(e.detail));
  assert.throws(() => new KeyRing().add({ kty: 'RSA', n: 'AQAB', e: 'AQAB', kid: 'x' }), (e: unknown) => e instanceof RaError && /unsupported node key/.test(e.detail));
  await writeFile(path.join(dir, 'relay-9.pub.jwk'), JSON.stringify({ ...pub, kid: 'edge-a' }));
  await assert.rejects(KeyRing.fromDir(dir, ['relay-9']), (e: unknown) => e instanceof RaError && /for kid "edge-a"/.test(e.detail));
});

test('ok/KeyRing.add replaces a key (rotation) and drops the cached import', async () => {
  const old = await generateNodeKey('edge-a');
  const rotated = await generateNodeKey('edge-a');
  const ring = new KeyRing([['edge-a', old.publicJwk]]);
  assert.ok(await signs(old, ring));
  ring.add({ ...rotated.publicJwk, kid: 'edge-a' });
  assert.equal(await signs(old, ring), false);
  assert.ok(await signs(rotated, ring));
});
