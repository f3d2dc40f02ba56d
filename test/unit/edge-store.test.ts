import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { NodeStore } from '../../shared/store/index.js';
import { AcmeStore, type OrderRecord } from '../../services/edge/acme/records.js';
import { pruneExpired } from '../../services/edge/acme/prune.js';
import { EabStore } from '../../services/edge/eab/eab-store.js';

const DAY = 86_400_000;

async function withStore(fn: (s: AcmeStore, dir: string) => Promise<void>) {
  const dir = await mkdtemp(join(tmpdir(), 'ra-mesh-store-'));
  const db = await NodeStore.open(dir);
  try {
    await fn(new AcmeStore(db), dir);
  } finally {
    await db.close().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
}

async function putOrder(s: AcmeStore, id: string, status: OrderRecord['status'], expiresAt: number) {
  const order: OrderRecord = {
    id, accountId: 'acct', status, expires: new Date(expiresAt).toISOString(), identifiers: [{ type: 'dns', value: `${id}.test` }],
    authzIds: [`az-${id}`], createdAt: new Date(expiresAt - DAY).toISOString(), ...(status === 'processing' || status === 'valid' ? { envelopeId: `env-${id}` } : {}),
  };
  await s.orders.put(id, order);
  await s.accountOrders.put(`acct/${id}`, id);
  await s.authzs.put(`az-${id}`, { id: `az-${id}`, accountId: 'acct', identifier: order.identifiers[0]!, status: 'pending', expires: order.expires, wildcard: false, challengeIds: [`ch-${id}`] });
  await s.challenges.put(`ch-${id}`, { id: `ch-${id}`, authzId: `az-${id}`, accountId: 'acct', type: 'http-01', token: 't', status: 'pending' });
  if (order.envelopeId) await s.orderByEnvelope.put(order.envelopeId, id);
}

test('ok/prune removes long-expired orders with their authzs and challenges, keeps the rest', async () => {
  await withStore(async (s) => {
    const now = Date.now();
    await putOrder(s, 'old-invalid', 'invalid', now - 10 * DAY);
    await putOrder(s, 'old-valid', 'valid', now - 8 * DAY);
    await putOrder(s, 'old-processing', 'processing', now - 10 * DAY);
    await putOrder(s, 'recent', 'invalid', now - 1 * DAY);
    await putOrder(s, 'live', 'pending', now + DAY);
    await s.certificates.put('old-valid', { id: 'old-valid', orderId: 'old-valid', accountId: 'acct', chainPem: 'PEM', issuedAt: '' });
    assert.equal(await pruneExpired(s, now), 2);
    assert.deepEqual((await s.orders.values()).map((o) => o.id).sort(), ['live', 'old-processing', 'recent']);
    assert.deepEqual((await s.accountOrders.values()).sort(), ['live', 'old-processing', 'recent']);
    assert.equal(await s.authzs.get('az-old-invalid'), undefined);
    assert.equal(await s.challenges.get('ch-old-valid'), undefined);
    assert.equal(await s.orderByEnvelope.get('env-old-valid'), undefined);
    assert.ok(await s.certificates.get('old-valid'), 'certificates are kept');
    assert.equal(await pruneExpired(s, now), 0);
  });
});

test('ok/the store survives a restart', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ra-mesh-store-'));
  try {
    let db = await NodeStore.open(dir);
    await putOrder(new AcmeStore(db), 'o1', 'pending', Date.now() + DAY);
    await db.close();
    db = await NodeStore.open(dir);
    const s = new AcmeStore(db);
    assert.equal((await s.orders.get('o1'))?.status, 'pending');
    assert.equal((await s.challenges.get('ch-o1'))?.type, 'http-01');
    await db.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('ok/generated EAB key ids and MAC keys never begin with "-" (a CLI would take them for an option)', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ra-mesh-eab-'));
  const db = await NodeStore.open(dir);
  try {
    const eab = new EabStore(db);
    // One value in 64 begins with "-" when drawn plainly: 400 keys (800 values) would show it.
    for (let i = 0; i < 400; i++) {
      const k = await eab.add();
      assert.doesNotMatch(k.keyId, /^-/);
      assert.doesNotMatch(k.hmacKey, /^-/);
      assert.equal(Buffer.from(k.hmacKey, 'base64url').length, 32);
    }
  } finally {
    await db.close();
    await rm(dir, { recursive: true, force: true });
  }
});
