import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { startTestMesh, type TestMesh } from '../harness/mesh.js';
import { freePort } from '../harness/ports.js';
import { makeCsr, TestAcmeClient } from '../harness/acme-client.js';
import { run } from '../harness/tools.js';

// A relay's signing key rotated with `ra-mesh keys rotate|promote|retire` while the mesh runs: every
// step keeps issuing (the overlap), the relay restarts onto its new key, and after retire nothing
// signed with the old key is accepted. The relay runs as its own process; the gateway re-reads the
// keys folder every keyReload (1s here).

const BIN = fileURLToPath(new URL('../../bin/ra-mesh.js', import.meta.url));

describe('integration: relay key rotation in a running mesh', { timeout: 180_000 }, () => {
  let m: TestMesh;
  let client: TestAcmeClient;
  let responder: Awaited<ReturnType<typeof TestAcmeClient.http01Responder>>;
  let n = 0;

  before(async () => {
    const http01Port = await freePort();
    const hosts = Object.fromEntries(Array.from({ length: 10 }, (_, i) => [`k${i}.rotate.example.test`, '127.0.0.1']));
    m = await startTestMesh({
      nodes: [
        { id: 'gw', role: 'gateway', dc: 'core' },
        { id: 'relay-r', role: 'relay', dc: 'dc-a', parent: 'gw' },
        { id: 'edge-r', role: 'edge', dc: 'dc-a', parent: 'relay-r', acme: { http01Port, hosts } },
      ],
      external: ['relay-r'],
      retransmitMs: 300,
      keyReload: '1s',
    });
    responder = await TestAcmeClient.http01Responder(http01Port);
    client = await new TestAcmeClient(m.directory('edge-r'), await readFile(m.edgeTlsCert('edge-r'), 'utf8')).init();
    assert.equal((await client.register()).status, 201);
  });
  after(async () => {
    await responder?.close();
    await m?.stop();
  });

  async function cli(...args: string[]): Promise<string> {
    return (await run(process.execPath, [BIN, 'keys', ...args], { env: { RA_MESH_LOG_LEVEL: 'error' } })).out;
  }

  async function issue(timeoutMs = 30_000): Promise<{ status: string }> {
    const name = `k${n++}.rotate.example.test`;
    const { url, order } = await client.readyOrder([name], responder);
    await client.post(order.finalize, { csr: await makeCsr([name]) });
    return client.poll(url, (o) => o.status !== 'processing' && o.status !== 'ready', timeoutMs);
  }

  const reload = () => new Promise((r) => setTimeout(r, 2_500));

  test('ok/rotate, promote with a restart, retire: issuance goes on; the retired key is refused', async () => {
    let relay = await m.spawnNode('relay-r');
    assert.equal((await issue()).status, 'valid');
    const listed = await cli('list', m.topologyFile);
    assert.match(listed, /^relay-r {2}current {2}ES256 {2}[A-Za-z0-9_-]{43}$/m);

    assert.match(await cli('rotate', m.topologyFile, '--node', 'relay-r'), /relay-r: next key [A-Za-z0-9_-]{43}/);
    await reload();
    assert.match(await cli('list', m.topologyFile), /^relay-r {2}next /m);
    assert.equal((await issue()).status, 'valid', 'current key still accepted while next is staged');

    const oldPrivate = await readFile(join(m.topology.keysDir(), 'relay-r.key.jwk'), 'utf8');
    await cli('promote', m.topologyFile, '--node', 'relay-r');
    await reload();
    assert.equal((await issue()).status, 'valid', 'the relay, not restarted yet, signs with the old key: still accepted as prev');
    await relay.kill('SIGTERM');
    relay = await m.spawnNode('relay-r');
    assert.equal((await issue()).status, 'valid', 'restarted onto the promoted key');

    await cli('retire', m.topologyFile, '--node', 'relay-r');
    await reload();
    assert.doesNotMatch(await cli('list', m.topologyFile), /^relay-r {2}prev /m);
    assert.equal((await issue()).status, 'valid');
    // A relay process still holding the retired key: its envelopes are refused by the gateway.
    await relay.kill('SIGTERM');
    const { writeFile } = await import('node:fs/promises');
    const keyFile = join(m.topology.keysDir(), 'relay-r.key.jwk');
    const newPrivate = await readFile(keyFile, 'utf8');
    await writeFile(keyFile, oldPrivate);
    // The node rewrites its public file from its private key at start: put the current one back after.
    relay = await m.spawnNode('relay-r');
    await writeFile(keyFile, newPrivate);
    const pub = JSON.parse(newPrivate) as Record<string, unknown>;
    delete pub.d;
    await writeFile(join(m.topology.keysDir(), 'relay-r.pub.jwk'), JSON.stringify(pub, null, 2) + '\n');
    await reload();
    await assert.rejects(issue(8_000), /timed out polling/);
    assert.match(relay.output(), /is up/);
    await relay.kill('SIGTERM');
  });
});
