import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { AUDIT_FILE, auditDir, verifyAuditLog } from '../../shared/audit/audit-log.js';
import { NodeStore } from '../../shared/store/index.js';
import { startTestMesh, type TestMesh } from '../harness/mesh.js';
import { freePort } from '../harness/ports.js';
import { makeCsr, TestAcmeClient } from '../harness/acme-client.js';
import { pemCerts, pool } from '../harness/tools.js';

// Nothing accepted is lost, nothing is issued twice: nodes killed with SIGKILL (separate processes)
// and the hub NATS server stopped while requests are in flight. Requests enter through the edge's
// ACME server like any client's; "count at the CA" is the builtin CA's own issuance record.

type Responder = Awaited<ReturnType<typeof TestAcmeClient.http01Responder>>;

/** Every issuance record of the builtin CA in a gateway store (the store must not be open elsewhere). */
async function caRecords(storeDir: string): Promise<Array<{ requestId: string; serial: string }>> {
  const db = await NodeStore.open(storeDir);
  try {
    return await db.collection<{ requestId: string; serial: string }>('cas-builtin-issued').values();
  } finally {
    await db.close();
  }
}

function serialOf(chainPem: string): string {
  return pemCerts(chainPem)[0]!.serialNumber.toLowerCase();
}

interface Harness {
  m: TestMesh;
  client: TestAcmeClient;
  responder: Responder;
}

async function setup(nodes: Parameters<typeof startTestMesh>[0]['nodes'], names: string[], external: string[], edge: string): Promise<Harness> {
  const http01Port = await freePort();
  const hosts = Object.fromEntries(names.map((n) => [n, '127.0.0.1']));
  const withAcme = nodes.map((n) => (n.id === edge ? { ...n, acme: { http01Port, hosts } } : n));
  // A message a killed node had taken is delivered again after ackWait.
  const m = await startTestMesh({ nodes: withAcme, external, retransmitMs: 300, nats: { queue: { ackWait: '2s' } } });
  const responder = await TestAcmeClient.http01Responder(http01Port);
  const client = await new TestAcmeClient(m.directory(edge), await readFile(m.edgeTlsCert(edge), 'utf8')).init();
  assert.equal((await client.register()).status, 201);
  return { m, client, responder };
}

/** newOrder + http-01 (validated by the edge, inside its segment) until the order is ready. */
async function ready(h: Harness, name: string): Promise<{ url: string; order: { finalize: string; status: string } }> {
  const r = await h.client.readyOrder([name], h.responder);
  assert.equal(r.order.status, 'ready', `${name}: ${JSON.stringify(r.order)}`);
  return r;
}

async function finalize(h: Harness, o: { order: { finalize: string } }, name: string): Promise<void> {
  const r = await h.client.post(o.order.finalize, { csr: await makeCsr([name]) });
  assert.equal(r.status, 200, r.body);
  assert.ok(['processing', 'valid'].includes(r.json().status), r.body);
}

async function certificateOf(h: Harness, url: string, timeoutMs: number): Promise<string> {
  const order = await h.client.poll(url, (o) => o.status === 'valid' || o.status === 'invalid', timeoutMs);
  assert.equal(order.status, 'valid', JSON.stringify(order));
  const cert = await h.client.post(order.certificate, undefined);
  assert.equal(cert.status, 200);
  return cert.body;
}

/** Starts the gateway with `fault` armed, finalizes an order for `name` and waits for the gateway to die there. */
async function orderKillingGateway(h: Harness, fault: string, name: string): Promise<Awaited<ReturnType<typeof ready>>> {
  const gw = await h.m.spawnNode('gw', { RA_MESH_FAULTS: `${fault}=kill` });
  const o = await ready(h, name);
  await finalize(h, o, name);
  const died = await gw.exited;
  assert.equal(died.signal, 'SIGKILL', gw.output());
  assert.ok(gw.output().includes(`fault point ${fault} fired`), gw.output());
  return o;
}

describe('integration: the gateway is killed between the CA call and the result', { timeout: 120_000 }, () => {
  let h: Harness;
  before(async () => {
    h = await setup(
      [
        { id: 'gw', role: 'gateway', dc: 'core' },
        { id: 'edge-c', role: 'edge', dc: 'dc-a', parent: 'gw' },
      ],
      ['crash.example.test', 'audit-crash.example.test'],
      ['gw'],
      'edge-c',
    );
  });
  after(async () => {
    await h?.responder.close();
    await h?.m.stop();
  });

  test('ok/the restarted gateway answers the redelivered envelope with the one certificate the CA signed', async () => {
    const o = await orderKillingGateway(h, 'gateway.after-cas', 'crash.example.test');
    // The CA signed once and recorded it; the gateway stored and sent nothing.
    const signed = await caRecords(h.m.topology.storeDir('gw'));
    assert.equal(signed.length, 1);

    const gw2 = await h.m.spawnNode('gw');
    const chain = await certificateOf(h, o.url, 60_000);
    await gw2.kill('SIGTERM');
    const records = await caRecords(h.m.topology.storeDir('gw'));
    assert.equal(records.length, 1, 'one certificate at the CA');
    assert.equal(records[0]!.serial.toLowerCase(), serialOf(chain), 'the client got the certificate the CA recorded');
  });

  test('ok/killed between its audit append and the head write: the restarted gateway opens the log and answers once', async () => {
    const dir = auditDir(h.m.topology, 'gw');
    const before = await verifyAuditLog(dir);
    assert.ok(before.ok && before.headBehind === 0, JSON.stringify(before));
    const o = await orderKillingGateway(h, 'audit.after-append', 'audit-crash.example.test');
    // The decision is in the log, its head still names the record before it: intact, one record behind.
    const crashed = await verifyAuditLog(dir);
    assert.ok(crashed.ok && crashed.records === before.records + 1 && crashed.headBehind === 1, JSON.stringify(crashed));

    const gw2 = await h.m.spawnNode('gw');
    const chain = await certificateOf(h, o.url, 60_000);
    await gw2.kill('SIGTERM');
    const after = await verifyAuditLog(dir);
    assert.ok(after.ok && after.headBehind === 0, JSON.stringify(after));
    const lines = (await readFile(join(dir, AUDIT_FILE), 'utf8')).trimEnd().split('\n').map((l) => JSON.parse(l) as { event: string; identifiers: string[]; serial?: string });
    const mine = lines.filter((r) => r.identifiers.includes('dns:audit-crash.example.test'));
    // Recorded before the crash and again when the redelivered envelope was answered (the CA's answer: the same serial).
    assert.deepEqual([...new Set(mine.map((r) => `${r.event} ${r.serial}`))], [`issued ${serialOf(chain)}`]);
    const records = (await caRecords(h.m.topology.storeDir('gw'))).filter((r) => r.serial.toLowerCase() === serialOf(chain));
    assert.equal(records.length, 1, 'one certificate at the CA');
  });
});

const RELAY_KILL_REQUESTS = 500;

describe(`integration: kill -9 a relay with ${RELAY_KILL_REQUESTS} requests in flight`, { timeout: 600_000 }, () => {
  let h: Harness;
  const names = Array.from({ length: RELAY_KILL_REQUESTS }, (_, i) => `d${i}.kill.example.test`);
  before(async () => {
    h = await setup(
      [
        { id: 'gw', role: 'gateway', dc: 'core' },
        { id: 'relay-k', role: 'relay', dc: 'dc-a', parent: 'gw' },
        { id: 'edge-k', role: 'edge', dc: 'dc-b', parent: 'relay-k' },
      ],
      names,
      ['relay-k'],
      'edge-k',
    );
  });
  after(async () => {
    await h?.responder.close();
    await h?.m.stop();
  });

  test(`ok/all ${RELAY_KILL_REQUESTS} certificates are issued, none twice`, async () => {
    let relay = await h.m.spawnNode('relay-k');
    const orders = await pool(names, 16, (n) => ready(h, n));
    let killed = false;
    await pool(orders, 32, async (o, i) => {
      await finalize(h, o, names[i]!);
      // Mid-stream, with envelopes queued at and passing through the relay: SIGKILL.
      if (i >= RELAY_KILL_REQUESTS / 4 && !killed) {
        killed = true;
        await relay.kill('SIGKILL');
      }
    });
    assert.ok(killed);
    relay = await h.m.spawnNode('relay-k');
    const chains = await pool(orders, 32, (o) => certificateOf(h, o.url, 300_000));
    const serials = new Set(chains.map(serialOf));
    assert.equal(serials.size, RELAY_KILL_REQUESTS, 'every order has its own certificate');
    const gw = h.m.mesh.gateway!;
    assert.equal(gw.issued, RELAY_KILL_REQUESTS, 'CA calls');
    const atCa: string[] = [];
    for await (const r of (gw.cas as import('../../services/gateway/cas/builtin-cas.js').BuiltinCas).issuedCertificates()) atCa.push(r.serial.toLowerCase());
    assert.equal(atCa.length, RELAY_KILL_REQUESTS, 'certificates at the CA');
    assert.deepEqual(new Set(atCa), serials);
    await relay.kill('SIGTERM');
  });
});

describe('integration: the hub NATS server is down while an edge keeps accepting', { timeout: 300_000 }, () => {
  let h: Harness;
  const names = Array.from({ length: 50 }, (_, i) => `h${i}.outage.example.test`);
  before(async () => {
    h = await setup(
      [
        { id: 'gw', role: 'gateway', dc: 'core' },
        { id: 'edge-h', role: 'edge', dc: 'dc-a', parent: 'gw' },
      ],
      names,
      [],
      'edge-h',
    );
  });
  after(async () => {
    await h?.responder.close();
    await h?.m.stop();
  });

  test('ok/every request accepted during the outage completes after the hub returns, once', async () => {
    const hub = h.m.bus.server('hub');
    await hub.stop();
    // The edge validates inside its segment and accepts finalize while its uplink is gone.
    const orders = await pool(names, 8, (n) => ready(h, n));
    await pool(orders, 8, (o, i) => finalize(h, o, names[i]!));
    for (const o of orders) assert.equal((await h.client.post(o.url, undefined)).json().status, 'processing');
    await hub.restart();
    const chains = await pool(orders, 16, (o) => certificateOf(h, o.url, 180_000));
    assert.equal(new Set(chains.map(serialOf)).size, names.length);
    assert.equal(h.m.mesh.gateway!.issued, names.length);
  });
});
