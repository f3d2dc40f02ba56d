import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startTestMesh, type TestMesh } from '../harness/mesh.js';
import { freePort } from '../harness/ports.js';
import { httpGet, opensslVerify, pemCerts, run, sanNames } from '../harness/tools.js';
import { makeCsr, TestAcmeClient } from '../harness/acme-client.js';

// Real ACME clients from Debian (lego, certbot) obtain certificates through edge -> relay -> gateway,
// validated with http-01 by the edge inside its "segment" (loopback here).

const NAMES = ['a.example.test', 'b.example.test', 'c.example.test', 'd.example.test', 't.example.test', 'x.example.test'];

describe('e2e: ACME clients through the mesh', { timeout: 300_000 }, () => {
  let m: TestMesh;
  let http01Port: number;
  let tlsAlpnPort: number;
  let work: string;
  let root: string;

  before(async () => {
    http01Port = await freePort();
    tlsAlpnPort = await freePort();
    work = await mkdtemp(join(tmpdir(), 'ra-mesh-e2e-'));
    m = await startTestMesh({
      nodes: [
        { id: 'gw', role: 'gateway', dc: 'core', policy: { allow: { dns: ['*.example.test'] }, maxLifetime: '48h' } },
        { id: 'relay-a', role: 'relay', dc: 'dc-a', parent: 'gw', policy: { deny: { dns: ['x.example.test'] } } },
        {
          id: 'edge-a',
          role: 'edge',
          dc: 'dc-a',
          segment: 'seg-a',
          parent: 'relay-a',
          acme: { http01Port, tlsAlpn01Port: tlsAlpnPort, challenges: ['http-01', 'tls-alpn-01'], hosts: Object.fromEntries(NAMES.map((n) => [n, '127.0.0.1'])) },
          policy: { defaultLifetime: '12h' },
        },
      ],
    });
    root = await httpGet(m.rootsUrl());
  });

  after(async () => {
    await m?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  async function checkChain(chainPem: string, names: string[]) {
    const certs = pemCerts(chainPem);
    assert.equal(certs.length, 2, 'leaf + intermediate');
    assert.deepEqual(sanNames(certs[0]!), [...names].sort());
    const hours = (certs[0]!.notAfter.getTime() - certs[0]!.notBefore.getTime()) / 3_600_000;
    // edge policy defaultLifetime 12h (+1 minute of backdating for clock skew)
    assert.ok(hours > 11.9 && hours < 12.1, `lifetime ${hours}h`);
    assert.match(await opensslVerify(work, chainPem, root), /OK/);
  }

  test('ok/lego http-01', async () => {
    const path = join(work, 'lego');
    await run(
      'lego',
      ['--server', m.directory('edge-a'), '--email', 'ops@example.test', '--accept-tos', '--path', path,
        '--domains', 'a.example.test', '--domains', 'b.example.test', '--http', '--http.port', `127.0.0.1:${http01Port}`, 'run'],
      { env: { LEGO_CA_CERTIFICATES: m.edgeTlsCert('edge-a') }, timeoutMs: 120_000 },
    );
    const chain = await readFile(join(path, 'certificates', 'a.example.test.crt'), 'utf8');
    await checkChain(chain, ['a.example.test', 'b.example.test']);
  });

  test('ok/lego tls-alpn-01 (RFC 8737)', async () => {
    const path = join(work, 'lego-tls');
    await run(
      'lego',
      ['--server', m.directory('edge-a'), '--email', 'ops@example.test', '--accept-tos', '--path', path,
        '--domains', 't.example.test', '--tls', '--tls.port', `127.0.0.1:${tlsAlpnPort}`, 'run'],
      { env: { LEGO_CA_CERTIFICATES: m.edgeTlsCert('edge-a') }, timeoutMs: 120_000 },
    );
    await checkChain(await readFile(join(path, 'certificates', 't.example.test.crt'), 'utf8'), ['t.example.test']);
  });

  test('ok/certbot standalone http-01', async () => {
    const d = join(work, 'certbot');
    await run(
      'certbot',
      ['certonly', '--standalone', '--server', m.directory('edge-a'), '--http-01-port', String(http01Port), '--http-01-address', '127.0.0.1',
        '-d', 'c.example.test', '--config-dir', d, '--work-dir', d, '--logs-dir', d,
        '--register-unsafely-without-email', '--agree-tos', '--non-interactive'],
      { env: { REQUESTS_CA_BUNDLE: m.edgeTlsCert('edge-a') }, timeoutMs: 120_000 },
    );
    const chain = await readFile(join(d, 'live', 'c.example.test', 'fullchain.pem'), 'utf8');
    await checkChain(chain, ['c.example.test']);
  });

  test('fail/csr with a name not in the order is badCSR and the order stays ready', async () => {
    const ca = await readFile(m.edgeTlsCert('edge-a'), 'utf8');
    const client = await new TestAcmeClient(m.directory('edge-a'), ca).init();
    assert.equal((await client.register()).status, 201);
    const responder = await TestAcmeClient.http01Responder(http01Port);
    try {
      const { url, order } = await client.readyOrder(['d.example.test'], responder);
      assert.equal(order.status, 'ready');
      const r = await client.post(order.finalize, { csr: await makeCsr(['d.example.test', 'evil.example.test']) });
      assert.equal(r.status, 400);
      assert.equal(r.headers['content-type'], 'application/problem+json; charset=utf-8');
      assert.equal(r.json().type, 'urn:ietf:params:acme:error:badCSR');
      assert.match(r.json().detail, /evil\.example\.test/);
      assert.equal((await client.post(url, undefined)).json().status, 'ready');
      // The right CSR afterwards issues.
      const ok = await client.post(order.finalize, { csr: await makeCsr(['d.example.test']) });
      assert.equal(ok.status, 200);
      const done = await client.poll(url, (o) => o.status === 'valid' || o.status === 'invalid');
      assert.equal(done.status, 'valid');
      const cert = await client.post(done.certificate, undefined);
      assert.equal(cert.headers['content-type'], 'application/pem-certificate-chain');
      await checkChain(cert.body, ['d.example.test']);
    } finally {
      await responder.close();
    }
  });

  test('fail/name refused by the relay layer reaches the client as rejectedIdentifier naming the relay rule', async () => {
    const ca = await readFile(m.edgeTlsCert('edge-a'), 'utf8');
    const client = await new TestAcmeClient(m.directory('edge-a'), ca).init();
    await client.register();
    // The edge checks every layer it can see at newOrder: the relay's deny rule refuses early.
    const r = await client.post(client.dir.newOrder!, { identifiers: [{ type: 'dns', value: 'x.example.test' }] });
    assert.equal(r.status, 400);
    const p = r.json();
    assert.equal(p.type, 'urn:ietf:params:acme:error:rejectedIdentifier');
    assert.equal(p.subproblems[0].identifier.value, 'x.example.test');
    assert.match(p.subproblems[0].detail, /relay-a: deny\.dns "x\.example\.test"/);
  });
});
