import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { connect, type NatsConnection } from 'nats';
import { EnvelopeQueue } from '../../shared/bus/queue.js';
import { nodeConnectOptions } from '../../shared/bus/auth.js';
import { parseDuration } from '../../shared/config/index.js';
import { loadOrCreateNodeKey, newEdgePayload, signEdgeEnvelope } from '../../shared/envelope/index.js';
import { createLogger } from '../../shared/logging/logger.js';
import { makeCsr, TestAcmeClient } from '../harness/acme-client.js';
import { startTestMesh, type NodeProcess, type TestMesh } from '../harness/mesh.js';
import { freePort } from '../harness/ports.js';

// One request followed across nodes by its envelope id: every node runs as its own `ra-mesh up
// --only <id>` process with debug logs (pino JSON lines); an ACME order through edge-b -> relay-2 ->
// relay-1 -> gw, an envelope refused by relay-1's layer and a junk message. Every log line that
// mentions an envelope id carries it as `envelopeId`, and each node logged its steps with it.

const NODES = ['gw', 'relay-1', 'relay-2', 'edge-b'];
const NAME = 'logged.corp.test';

interface Line {
  node?: string;
  msg: string;
  envelopeId?: string;
  [k: string]: unknown;
}

describe('integration: structured logs carry the envelope id across nodes', { timeout: 120_000 }, () => {
  let m: TestMesh;
  let nc: NatsConnection | undefined;
  const procs = new Map<string, NodeProcess>();
  let envelopeId: string;
  let refusedId: string;

  before(async () => {
    const http01Port = await freePort();
    m = await startTestMesh({
      external: NODES,
      nodes: [
        { id: 'gw', role: 'gateway', dc: 'core' },
        { id: 'relay-1', role: 'relay', dc: 'dc-a', parent: 'gw', policy: { deny: { dns: ['*.pci.corp.test'] } } },
        { id: 'relay-2', role: 'relay', dc: 'dc-b', parent: 'relay-1' },
        { id: 'edge-b', role: 'edge', dc: 'dc-b', parent: 'relay-2', acme: { http01Port, hosts: { [NAME]: '127.0.0.1' } } },
      ],
    });
    for (const id of NODES) procs.set(id, await m.spawnNode(id, { RA_MESH_LOG_LEVEL: 'debug' }));
    const acme = m.topology.acme('edge-b');
    const ca = await readFile(join(m.topology.storeDir('edge-b'), 'tls-cert.pem'), 'utf8');
    const client = await new TestAcmeClient(`https://${acme.listen}/acme/directory`, ca).init();
    assert.equal((await client.register()).status, 201);
    const responder = await TestAcmeClient.http01Responder(http01Port);
    try {
      const r = await client.readyOrder([NAME], responder);
      assert.equal((await client.post(r.order.finalize, { csr: await makeCsr([NAME]) })).status, 200);
      const done = await client.poll(r.url, (o) => o.status !== 'processing', 30_000);
      assert.equal(done.status, 'valid', JSON.stringify(done));
    } finally {
      await responder.close();
    }
    // A refusal by relay-1 and a junk message, both into edge-b's outbound stream as edge-b.
    nc = await connect({ servers: m.topology.natsUrl('edge-b'), ...(await nodeConnectOptions(m.topology, 'edge-b')) });
    const q = await EnvelopeQueue.open(nc, m.topology, 'edge-b', { log: createLogger('test') });
    const payload = newEdgePayload({
      origin: { node: 'edge-b', dc: 'dc-b' },
      csr: await makeCsr(['x.pci.corp.test']),
      identifiers: [{ type: 'dns', value: 'x.pci.corp.test', validation: { method: 'http-01', at: new Date().toISOString(), from: '127.0.0.1:80' } }],
      account: { id: 'acct', eab: null, jwkThumbprint: 'thumb' },
      requested: { notBefore: null, notAfter: null },
      renewalOf: null,
      ttlMs: parseDuration('5m'),
    });
    refusedId = payload.id;
    await q.send(await signEdgeEnvelope(payload, await loadOrCreateNodeKey(m.topology.keysDir(), 'edge-b')), refusedId);
    await q.send('not a jws', 'junk-logged');
    // Bounded wait for the last steps to be logged.
    const until = Date.now() + 15_000;
    while (!(/result for an unknown envelope dropped/.test(procs.get('edge-b')!.output()) && /envelope rejected and dropped/.test(procs.get('relay-2')!.output()))) {
      if (Date.now() > until) throw new Error('the refusal and the junk were not logged');
      await new Promise((r) => setTimeout(r, 100));
    }
    envelopeId = linesOf('edge-b').find((l) => l.msg === 'envelope queued')!.envelopeId!;
  });

  after(async () => {
    await nc?.close().catch(() => undefined);
    await m?.stop();
  });

  function linesOf(id: string): Line[] {
    return procs
      .get(id)!
      .output()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Line);
  }

  test('ok/every line that mentions an envelope id carries it as envelopeId', () => {
    let mentioned = 0;
    for (const id of NODES) {
      for (const line of linesOf(id)) {
        const text = JSON.stringify(line);
        for (const e of [envelopeId, refusedId, 'junk-logged']) {
          if (!text.includes(e)) continue;
          mentioned += 1;
          assert.equal(line.envelopeId, e, `${id}: ${text}`);
        }
      }
    }
    assert.ok(mentioned >= 12, `${mentioned} lines`);
  });

  const steps: Array<[string, string, string[]]> = [
    ['ok/edge-b: queued and received the certificate', 'edge-b', ['envelope queued', 'envelope stored in the outbound stream', 'certificate received']],
    ['ok/relay-2: received and forwarded', 'relay-2', ['envelope received', 'envelope forwarded']],
    ['ok/relay-1: received and forwarded', 'relay-1', ['envelope received', 'envelope forwarded']],
    ['ok/gw: received, issued, answered', 'gw', ['envelope received', 'certificate issued', 'result sent']],
  ];
  for (const [name, node, msgs] of steps) {
    test(name, () => {
      const mine = linesOf(node).filter((l) => l.envelopeId === envelopeId).map((l) => l.msg);
      for (const msg of msgs) assert.ok(mine.includes(msg), `${node} did not log "${msg}" for ${envelopeId}: ${JSON.stringify(mine)}`);
    });
  }

  test('fail/the refusal is followed from relay-1 to the edge by its id', () => {
    assert.ok(linesOf('relay-1').some((l) => l.envelopeId === refusedId && l.msg === 'request refused by this layer'));
    assert.ok(linesOf('edge-b').some((l) => l.envelopeId === refusedId && l.msg === 'result for an unknown envelope dropped'));
    assert.ok(!linesOf('gw').some((l) => l.envelopeId === refusedId), 'never reached the gateway');
  });

  test('fail/a junk message is logged with the id its bus header claims', () => {
    const dropped = linesOf('relay-2').filter((l) => l.msg === 'envelope rejected and dropped');
    assert.deepEqual(dropped.map((l) => [l.envelopeId, l.from, l.reason]), [['junk-logged', 'edge-b', 'malformed']]);
  });
});
