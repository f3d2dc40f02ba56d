import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import { startTestMesh, type TestMesh } from '../harness/mesh.js';
import { TestAcmeClient } from '../harness/acme-client.js';

// The edge's sweep removes orders that expired longer than acme.retention ago, with their
// authorizations and challenges; live orders and the account stay.

describe('integration: edge prunes expired orders', { timeout: 120_000 }, () => {
  let m: TestMesh;
  let ca: string;

  before(async () => {
    m = await startTestMesh({
      nodes: [
        { id: 'gw', role: 'gateway', dc: 'core' },
        { id: 'edge-p', role: 'edge', dc: 'dc-a', parent: 'gw', acme: { orderLifetime: '2s', retention: '1s' } },
      ],
    });
    ca = await readFile(m.edgeTlsCert('edge-p'), 'utf8');
  });
  after(async () => m?.stop());

  test('ok/an expired order, its authorization and challenge disappear after retention; the account stays', async () => {
    const client = await new TestAcmeClient(m.directory('edge-p'), ca).init();
    assert.equal((await client.register()).status, 201);
    const r = await client.post(client.dir.newOrder!, { identifiers: [{ type: 'dns', value: 'gone.example.test' }] });
    assert.equal(r.status, 201);
    const orderUrl = r.headers.location as string;
    const authzUrl = r.json().authorizations[0] as string;
    const authz = (await client.post(authzUrl, undefined)).json();
    const challengeUrl = authz.challenges[0].url as string;

    // Before expiry (+ retention) the order answers; afterwards it is gone (bounded wait).
    const first = await client.post(orderUrl, undefined);
    assert.equal(first.status, 200);
    const until = Date.now() + 30_000;
    let status = 200;
    while (status === 200 && Date.now() < until) {
      await new Promise((res) => setTimeout(res, 250));
      status = (await client.post(orderUrl, undefined)).status;
    }
    assert.equal(status, 404, 'order pruned');
    assert.equal((await client.post(authzUrl, undefined)).status, 404, 'authorization pruned');
    assert.equal((await client.post(challengeUrl, undefined)).status, 404, 'challenge pruned');
    // The account is kept.
    const acct = await client.post(client.kid!, undefined);
    assert.equal(acct.status, 200);
    assert.equal(acct.json().status, 'valid');
  });
});
