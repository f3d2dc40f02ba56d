import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import { EdgeService } from '../../services/edge/index.js';
import { httpsFetch, TestAcmeClient } from '../harness/acme-client.js';
import { startTestMesh, type TestMesh } from '../harness/mesh.js';

// RFC 8555 §6.5: a nonce is good once. The edge keeps the nonces it handed out in its store, so a
// client holding one across an edge restart is not sent a badNonce it did not earn; a used or unknown
// nonce is badNonce before and after, with a fresh nonce to retry with.

const PROBLEM = 'urn:ietf:params:acme:error:';

describe('integration: ACME nonces survive an edge restart', { timeout: 120_000 }, () => {
  let m: TestMesh;
  let restarted: EdgeService | undefined;

  before(async () => {
    m = await startTestMesh({ nodes: [{ id: 'gw', role: 'gateway', dc: 'core' }, { id: 'edge', role: 'edge', dc: 'dc-a', parent: 'gw' }] });
  });
  after(async () => {
    await restarted?.stop();
    await m?.stop();
  });

  test('ok/a nonce from before the restart is accepted once; fail/a used one and an unknown one are badNonce', async () => {
    const ca = await readFile(m.edgeTlsCert('edge'), 'utf8');
    const directory = m.directory('edge');
    const client = await new TestAcmeClient(directory, ca).init();
    assert.equal((await client.register()).status, 201);
    const used = await client.newNonce();
    assert.equal((await client.post(client.kid!, undefined, { nonce: used })).status, 200);
    const held = await client.newNonce();

    const edge = m.mesh.edges.get('edge')!;
    await edge.stop();
    m.mesh.edges.delete('edge');
    restarted = await EdgeService.create({ topology: m.topology, nodeId: 'edge' });
    await restarted.start();
    // The directory answers again (same address and TLS certificate).
    assert.equal((await httpsFetch(directory, { ca })).status, 200);

    const ok = await client.post(client.kid!, undefined, { nonce: held });
    assert.equal(ok.status, 200, ok.body);
    for (const [name, nonce] of [['used before the restart', used], ['used just now', held], ['never issued', 'AAAAAAAAAAAAAAAAAAAAAA']] as const) {
      const r = await client.post(client.kid!, undefined, { nonce });
      assert.equal(r.status, 400, name);
      assert.equal(r.json().type, `${PROBLEM}badNonce`, name);
      assert.match(String(r.headers['replay-nonce']), /^[A-Za-z0-9_-]{16,}$/, `${name}: a fresh nonce to retry with`);
    }
  });
});
