import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import { EdgeService } from '../../services/edge/index.js';
import { GatewayService } from '../../services/gateway/index.js';
import { BuiltinCas } from '../../services/gateway/cas/builtin-cas.js';
import { x509 } from '../../shared/pki/index.js';
import { makeCsr, TestAcmeClient } from '../harness/acme-client.js';
import { startTestMesh, type TestMesh } from '../harness/mesh.js';
import { freePort } from '../harness/ports.js';

// RFC 8555 §7.1.3 / §7.4: a processing order whose answer never comes expires acme.orderLifetime after
// finalize, with a problem that says so. The edge never signs the envelope to live past that deadline,
// so a gateway that comes back later drops it (nothing issued); a certificate the CA signs after the
// deadline anyway (a slow CA) is revoked through the mesh rather than left valid and undelivered.

const PROBLEM = 'urn:ietf:params:acme:error:';
const NAMES = ['late-1.example.test', 'late-2.example.test', 'late-3.example.test'];

describe('integration: processing orders expire when the mesh does not answer', { timeout: 180_000 }, () => {
  let m: TestMesh;
  let ca: string;
  let http01Port: number;
  let gw: GatewayService | undefined;
  let restarted: EdgeService | undefined;

  before(async () => {
    http01Port = await freePort();
    m = await startTestMesh({
      retransmitMs: 300,
      envelope: { clockSkew: '1s' },
      nodes: [
        { id: 'gw', role: 'gateway', dc: 'core' },
        { id: 'relay', role: 'relay', dc: 'dc-a', parent: 'gw' },
        { id: 'edge', role: 'edge', dc: 'dc-a', parent: 'relay', acme: { orderLifetime: '3s', http01Port, hosts: Object.fromEntries(NAMES.map((n) => [n, '127.0.0.1'])) } },
      ],
    });
    ca = await readFile(m.edgeTlsCert('edge'), 'utf8');
    await m.mesh.gateway!.stop();
  });

  after(async () => {
    await restarted?.stop();
    await gw?.stop();
    await m?.stop();
  });

  /** A ready order for `name`, finalized; returns the client, the order URL and the finalize answer. */
  async function finalized(name: string) {
    const client = await new TestAcmeClient(m.directory('edge'), ca).init();
    await client.register();
    const responder = await TestAcmeClient.http01Responder(http01Port);
    try {
      const { url, order } = await client.readyOrder([name], responder);
      assert.equal(order.status, 'ready');
      const fin = await client.post(order.finalize, { csr: await makeCsr([name]) });
      return { client, url, fin };
    } finally {
      await responder.close();
    }
  }

  async function rejectedExpired(g: GatewayService): Promise<number> {
    const text = await (await fetch(`${g.httpUrl}/metrics`)).text();
    return [...text.matchAll(/^ramesh_envelopes_rejected_total\{[^}]*reason="expired"[^}]*\} (\d+)$/gm)].reduce((a, x) => a + Number(x[1]), 0);
  }

  test('fail/with the gateway down the order turns invalid after orderLifetime with a clear problem; the gateway back later issues nothing', async () => {
    const t0 = Date.now();
    const { client, url, fin } = await finalized(NAMES[0]!);
    assert.equal(fin.status, 200);
    assert.equal(fin.json().status, 'processing');
    assert.ok(Number(fin.headers['retry-after']) >= 1, 'Retry-After while processing');
    // RFC 8555 §7.1.3: expires tells the client when the server gives up on the order.
    const expires = Date.parse(fin.json().expires);
    assert.ok(expires >= t0 + 3000 && expires <= Date.now() + 3000, `expires ${fin.json().expires} is finalize + orderLifetime`);

    const done = await client.poll(url, (o) => o.status !== 'processing', 30_000);
    assert.equal(done.status, 'invalid');
    assert.equal(done.error.type, `${PROBLEM}serverInternal`);
    assert.match(done.error.detail, /no answer from the CA within 3s \(acme\.orderLifetime\).*nothing was issued/);

    // The gateway comes back: the queued copies of the envelope have expired, it drops them and issues nothing.
    gw = await GatewayService.create({ topology: m.topology });
    await gw.start();
    for (let i = 0; i < 100 && (await rejectedExpired(gw)) === 0; i++) await new Promise((r) => setTimeout(r, 200));
    assert.ok((await rejectedExpired(gw)) >= 1, 'the stale envelope reached the gateway and was dropped as expired');
    assert.equal(gw.issued, 0, 'no certificate for the expired order');
    assert.equal((await client.post(url, undefined)).json().status, 'invalid');
    await gw.stop();
    gw = undefined;
  });

  test('ok/a certificate the CA signs after the order expired is revoked through the mesh (cessationOfOperation)', async () => {
    gw = await GatewayService.create({ topology: m.topology });
    // A slow CA: the real builtin CA signs only once the client has seen its order expire.
    let expired!: () => void;
    const seen = new Promise<void>((r) => (expired = r));
    const sign = gw.cas.createCertificate.bind(gw.cas);
    (gw.cas as { createCertificate: typeof sign }).createCertificate = async (req) => {
      await seen;
      return sign(req);
    };
    await gw.start();
    const { client, url, fin } = await finalized(NAMES[1]!);
    assert.equal(fin.json().status, 'processing');
    const done = await client.poll(url, (o) => o.status !== 'processing', 30_000);
    assert.equal(done.status, 'invalid');
    expired();

    // The certificate is signed, reaches the edge for an order that is over, and is revoked.
    let entries: readonly x509.X509CrlEntry[] = [];
    for (let i = 0; i < 150 && entries.length === 0; i++) {
      await new Promise((r) => setTimeout(r, 200));
      entries = new x509.X509Crl(new Uint8Array(await (await fetch(`${gw.httpUrl}/crl`)).arrayBuffer())).entries;
    }
    assert.equal(gw.issued, 1);
    assert.equal(entries.length, 1, 'the late certificate is on the CRL');
    assert.equal(entries[0]!.reason, x509.X509CrlReason.cessationOfOperation);
    const issued = [];
    for await (const c of (gw.cas as BuiltinCas).issuedCertificates()) issued.push(c);
    assert.equal(issued.length, 1);
    const { serial } = issued[0]!;
    assert.equal(BigInt(`0x${entries[0]!.serialNumber}`), BigInt(`0x${serial}`), 'the revoked serial is the one the CA signed');
    // The client still sees the order as it was told: invalid, with no certificate.
    const after = (await client.post(url, undefined)).json();
    assert.equal(after.status, 'invalid');
    assert.equal(after.certificate, undefined);
  });

  test('fail/an edge restarted while its order waits still ends the order after orderLifetime', async () => {
    await gw?.stop();
    gw = undefined;
    const { client, url, fin } = await finalized(NAMES[2]!);
    assert.equal(fin.json().status, 'processing');
    // The edge restarts with the envelope in its outbox: the sweep learns it from the store at start.
    const edge = m.mesh.edges.get('edge')!;
    await edge.stop();
    m.mesh.edges.delete('edge');
    restarted = await EdgeService.create({ topology: m.topology, nodeId: 'edge' });
    await restarted.start();
    const done = await client.poll(url, (o) => o.status !== 'processing', 30_000);
    assert.equal(done.status, 'invalid');
    assert.match(done.error.detail, /no answer from the CA within 3s \(acme\.orderLifetime\)/);
  });
});
