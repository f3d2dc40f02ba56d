import assert from 'node:assert/strict';
import { webcrypto } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { get as httpGetRaw } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { calculateJwkThumbprint, exportJWK, type CryptoKey } from 'jose';
import { x509 } from '../../shared/pki/index.js';
import { startTestMesh, type TestMesh } from '../harness/mesh.js';
import { freePort } from '../harness/ports.js';
import { execFileP, pemCerts, run } from '../harness/tools.js';
import { makeCsr, TestAcmeClient } from '../harness/acme-client.js';
import { GatewayService } from '../../services/gateway/index.js';

// RFC 8555 §7.6 revocation by real clients (python3-acme, lego) through edge -> relay -> gateway;
// the builtin CA's CRL, served by the gateway and published down to the edge, lists what was revoked.

const PY_CLIENT = fileURLToPath(new URL('./clients/acme_revoke.py', import.meta.url));
const NAMES = ['r1.example.test', 'r2.example.test', 'l.example.test', 'f.example.test', 'g.example.test'];
const CRL_URL = 'http://crl.example.test/ra-mesh.crl';
const PROBLEM = 'urn:ietf:params:acme:error:';

/** GET with the body as bytes (http, or https trusting `ca`). */
function fetchBytes(url: string, ca?: string): Promise<{ status: number; type: string | undefined; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const done = (res: import('node:http').IncomingMessage) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: res.headers['content-type'], body: Buffer.concat(chunks) }));
    };
    const req = url.startsWith('https:') ? httpsRequest(url, { ca, timeout: 15_000 }, done) : httpGetRaw(url, { timeout: 15_000 }, done);
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

describe('e2e: certificate revocation through the mesh', { timeout: 400_000 }, () => {
  let m: TestMesh;
  let http01Port: number;
  let work: string;
  let edgeCa: string;
  let caFile: string;
  /** A gateway the last test starts again after stopping the mesh's own. */
  let restarted: GatewayService | undefined;

  before(async () => {
    http01Port = await freePort();
    work = await mkdtemp(join(tmpdir(), 'ra-mesh-e2e-revoke-'));
    m = await startTestMesh({
      retransmitMs: 1000,
      nodes: [
        { id: 'gw', role: 'gateway', dc: 'core', policy: { allow: { dns: ['*.example.test'] } }, cas: { type: 'builtin', crlUrl: CRL_URL } },
        { id: 'relay-a', role: 'relay', dc: 'dc-a', parent: 'gw' },
        {
          id: 'edge-a',
          role: 'edge',
          dc: 'dc-a',
          parent: 'relay-a',
          acme: { http01Port, hosts: Object.fromEntries(NAMES.map((n) => [n, '127.0.0.1'])) },
          policy: { defaultLifetime: '12h' },
        },
      ],
    });
    edgeCa = await readFile(m.edgeTlsCert('edge-a'), 'utf8');
    // The CRL is signed by the intermediate: openssl crl -CAfile needs it (and the root).
    const caDir = join(m.topology.storeDir('gw'), 'ca');
    caFile = join(work, 'ca.pem');
    await writeFile(caFile, (await readFile(join(caDir, 'intermediate.pem'), 'utf8')) + (await readFile(join(caDir, 'root.pem'), 'utf8')));
  });

  after(async () => {
    await restarted?.stop();
    await m?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  const gatewayCrlUrl = () => `${m.mesh.gateway!.httpUrl}/crl`;
  const edgeCrlUrl = () => new URL('/crl', m.directory('edge-a')).toString();

  /** openssl's text of a DER CRL, after it verified the signature against the CA file. */
  async function crlText(der: Buffer, name: string): Promise<string> {
    const file = join(work, name);
    await writeFile(file, der);
    const { stdout, stderr } = await execFileP('openssl', ['crl', '-inform', 'DER', '-in', file, '-text', '-noout', '-CAfile', caFile]);
    assert.match(stderr, /verify OK/, 'the CRL signature verifies against the intermediate');
    return stdout;
  }

  /** Serial (upper-case hex as openssl prints it) -> reason text, or null when the entry has no reason. */
  function crlEntries(text: string): Map<string, string | null> {
    const out = new Map<string, string | null>();
    const parts = text.split(/Serial Number: /).slice(1);
    for (const p of parts) {
      const serial = p.slice(0, p.indexOf('\n')).trim().toUpperCase();
      const reason = /CRL Reason Code:\s*\n\s*(.+)/.exec(p);
      out.set(serial, reason ? reason[1]!.trim() : null);
    }
    return out;
  }

  const hexUpper = (s: string) => (s.length % 2 ? `0${s}` : s).toUpperCase();

  async function gatewayCrl(): Promise<{ der: Buffer; entries: Map<string, string | null>; text: string }> {
    const r = await fetchBytes(gatewayCrlUrl());
    assert.equal(r.status, 200);
    assert.equal(r.type, 'application/pkix-crl');
    const text = await crlText(r.body, 'gw.crl');
    return { der: r.body, entries: crlEntries(text), text };
  }

  /** The edge's CRL once it lists every serial in `want` (it arrives over the bus after each revocation). */
  async function edgeCrlListing(want: string[]): Promise<Map<string, string | null>> {
    let last = '';
    for (let i = 0; i < 200; i++) {
      const r = await fetchBytes(edgeCrlUrl(), edgeCa);
      if (r.status === 200) {
        assert.equal(r.type, 'application/pkix-crl');
        const entries = crlEntries(await crlText(r.body, 'edge.crl'));
        if (want.every((s) => entries.has(s))) return entries;
        last = [...entries.keys()].join(',');
      }
      await new Promise((res) => setTimeout(res, 100));
    }
    throw new Error(`the edge CRL never listed ${want.join(', ')} (last: ${last})`);
  }

  test('ok/python3-acme revokes with the account key and with the certificate key; a repeat is alreadyRevoked; both CRLs list them with reasons', async () => {
    const { out } = await run('/usr/bin/python3', [PY_CLIENT, m.directory('edge-a'), String(http01Port), 'r1.example.test', 'r2.example.test'], {
      env: { REQUESTS_CA_BUNDLE: m.edgeTlsCert('edge-a') },
      timeoutMs: 180_000,
    });
    const res = JSON.parse(out.trim().split('\n').at(-1)!) as { serials: string[]; reasons: number[]; again: string };
    assert.equal(res.again, `${PROBLEM}alreadyRevoked`);
    const [s1, s2] = res.serials.map(hexUpper) as [string, string];
    const gw = await gatewayCrl();
    assert.equal(gw.entries.get(s1), 'Superseded');
    assert.equal(gw.entries.get(s2), 'Key Compromise');
    assert.match(gw.text, /X509v3 CRL Number:\s*\n\s*\d+/);
    assert.match(gw.text, /Next Update: /);
    const edge = await edgeCrlListing([s1, s2]);
    assert.equal(edge.get(s1), 'Superseded');
    assert.equal(edge.get(s2), 'Key Compromise');
  });

  test('ok/lego revoke', async () => {
    const path = join(work, 'lego');
    const env = { LEGO_CA_CERTIFICATES: m.edgeTlsCert('edge-a') };
    const common = ['--server', m.directory('edge-a'), '--email', 'ops@example.test', '--accept-tos', '--path', path, '--domains', 'l.example.test'];
    await run('lego', [...common, '--http', '--http.port', `127.0.0.1:${http01Port}`, 'run'], { env, timeoutMs: 120_000 });
    const leaf = pemCerts(await readFile(join(path, 'certificates', 'l.example.test.crt'), 'utf8'))[0]!;
    // The CRL Distribution Point is in issued certificates because the gateway's cas config names one.
    const { stdout } = await execFileP('openssl', ['x509', '-noout', '-ext', 'crlDistributionPoints', '-in', join(path, 'certificates', 'l.example.test.crt')]);
    assert.match(stdout, new RegExp(CRL_URL.replace(/\./g, '\\.')));
    await run('lego', [...common, 'revoke', '--reason', '5'], { env, timeoutMs: 120_000 });
    const serial = hexUpper(leaf.serialNumber);
    assert.equal((await gatewayCrl()).entries.get(serial), 'Cessation Of Operation');
    assert.equal((await edgeCrlListing([serial])).get(serial), 'Cessation Of Operation');
  });

  describe('refusals change nothing', () => {
    let owner: TestAcmeClient;
    let certDer: string;
    let certKey: { key: CryptoKey; jwk: import('jose').JWK };
    let serial: string;

    before(async () => {
      owner = await new TestAcmeClient(m.directory('edge-a'), edgeCa).init();
      await owner.register();
      const responder = await TestAcmeClient.http01Responder(http01Port);
      try {
        const { url, order } = await owner.readyOrder(['f.example.test'], responder);
        const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
        const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
        certKey = { key: keys.privateKey as unknown as CryptoKey, jwk: await exportJWK(keys.publicKey as unknown as CryptoKey) };
        const csr = await x509.Pkcs10CertificateRequestGenerator.create({
          name: 'CN=f.example.test',
          keys,
          signingAlgorithm: alg,
          extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: 'f.example.test' }])],
        });
        await owner.post(order.finalize, { csr: Buffer.from(csr.rawData).toString('base64url') });
        const done = await owner.poll(url, (o) => o.status === 'valid' || o.status === 'invalid');
        assert.equal(done.status, 'valid');
        const leaf = pemCerts((await owner.post(done.certificate, undefined)).body)[0]!;
        certDer = Buffer.from(leaf.rawData).toString('base64url');
        serial = hexUpper(leaf.serialNumber);
      } finally {
        await responder.close();
      }
    });

    /** A client signing with the certificate's key (jwk, no account). */
    async function certKeyClient(): Promise<TestAcmeClient> {
      const c = await new TestAcmeClient(m.directory('edge-a'), edgeCa).init();
      c.key = certKey.key;
      c.jwk = certKey.jwk;
      c.thumbprint = await calculateJwkThumbprint(certKey.jwk);
      return c;
    }

    async function stranger(): Promise<TestAcmeClient> {
      const c = await new TestAcmeClient(m.directory('edge-a'), edgeCa).init();
      await c.register();
      return c;
    }

    async function foreignCert(): Promise<string> {
      const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
      const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
      const c = await x509.X509CertificateGenerator.createSelfSigned({ name: 'CN=f.example.test', keys, signingAlgorithm: alg, serialNumber: '0102' });
      return Buffer.from(c.rawData).toString('base64url');
    }

    const cases: Array<[string, () => Promise<{ client: TestAcmeClient; payload: unknown }>, string]> = [
      ['fail/another account without authorizations', async () => ({ client: await stranger(), payload: { certificate: certDer } }), 'unauthorized'],
      ['fail/jwk that is not the certificate key', async () => ({ client: await new TestAcmeClient(m.directory('edge-a'), edgeCa).init(), payload: { certificate: certDer } }), 'unauthorized'],
      ['fail/reason 7 (unused in RFC 5280)', async () => ({ client: owner, payload: { certificate: certDer, reason: 7 } }), 'badRevocationReason'],
      ['fail/reason 6 (certificateHold)', async () => ({ client: owner, payload: { certificate: certDer, reason: 6 } }), 'badRevocationReason'],
      ['fail/reason 11', async () => ({ client: owner, payload: { certificate: certDer, reason: 11 } }), 'badRevocationReason'],
      ['fail/reason as a string', async () => ({ client: owner, payload: { certificate: certDer, reason: '1' } }), 'badRevocationReason'],
      ['fail/certificate not issued here', async () => ({ client: owner, payload: { certificate: await foreignCert() } }), 'malformed'],
      ['fail/certificate not DER', async () => ({ client: owner, payload: { certificate: 'AAAA' } }), 'malformed'],
      ['fail/no certificate', async () => ({ client: owner, payload: { reason: 1 } }), 'malformed'],
    ];

    test('fail/refusals are problem documents of the right type and leave the CRL and the certificate as they were', async () => {
      const before = (await gatewayCrl()).der;
      for (const [name, make, type] of cases) {
        const { client, payload } = await make();
        const r = await client.post(client.dir.revokeCert!, payload);
        assert.equal(r.headers['content-type'], 'application/problem+json; charset=utf-8', name);
        assert.equal(r.json().type, PROBLEM + type, `${name}: ${r.body}`);
      }
      assert.ok((await gatewayCrl()).der.equals(before), 'the CRL is unchanged');
      assert.ok(!(await gatewayCrl()).entries.has(serial));
    });

    test('ok/an account holding authorizations for all identifiers may revoke; then alreadyRevoked for the owner and the certificate key', async () => {
      const other = await stranger();
      const responder = await TestAcmeClient.http01Responder(http01Port);
      try {
        const { order } = await other.readyOrder(['f.example.test'], responder);
        assert.equal(order.status, 'ready');
      } finally {
        await responder.close();
      }
      const r = await other.post(other.dir.revokeCert!, { certificate: certDer, reason: 3 });
      assert.equal(r.status, 200, r.body);
      assert.equal((await gatewayCrl()).entries.get(serial), 'Affiliation Changed');
      const again = await owner.post(owner.dir.revokeCert!, { certificate: certDer });
      assert.equal(again.json().type, `${PROBLEM}alreadyRevoked`);
      const byKey = await certKeyClient();
      const again2 = await byKey.post(byKey.dir.revokeCert!, { certificate: certDer, reason: 1 });
      assert.equal(again2.json().type, `${PROBLEM}alreadyRevoked`);
    });
  });

  test('ok/with the gateway down revokeCert answers serverInternal after acme.revokeWait; the revocation completes once it is back', async () => {
    const client = await new TestAcmeClient(m.directory('edge-a'), edgeCa).init();
    await client.register();
    const responder = await TestAcmeClient.http01Responder(http01Port);
    let certDer: string;
    try {
      const { url, order } = await client.readyOrder(['g.example.test'], responder);
      await client.post(order.finalize, { csr: await makeCsr(['g.example.test']) });
      const done = await client.poll(url, (o) => o.status === 'valid' || o.status === 'invalid');
      assert.equal(done.status, 'valid');
      certDer = Buffer.from(pemCerts((await client.post(done.certificate, undefined)).body)[0]!.rawData).toString('base64url');
    } finally {
      await responder.close();
    }
    const serial = hexUpper(new x509.X509Certificate(Buffer.from(certDer, 'base64url')).serialNumber);
    await m.mesh.gateway!.stop();
    const r = await client.post(client.dir.revokeCert!, { certificate: certDer, reason: 1 });
    assert.equal(r.status, 500);
    assert.equal(r.json().type, `${PROBLEM}serverInternal`);
    assert.match(r.json().detail, /stays queued and completes without further action/);

    restarted = await GatewayService.create({ topology: m.topology });
    await restarted.start();
    // The edge retransmits the queued envelope; a repeat of the request joins it and answers 200 when
    // the CA's answer arrives while it waits, or alreadyRevoked when it arrived before.
    let last = '';
    for (let i = 0; i < 10; i++) {
      const again = await client.post(client.dir.revokeCert!, { certificate: certDer, reason: 1 });
      last = `${again.status} ${again.body}`;
      if (again.status === 200 || (again.status === 400 && again.json().type === `${PROBLEM}alreadyRevoked`)) break;
    }
    assert.match(last, /^(200 |400 .*alreadyRevoked)/);
    assert.equal((await gatewayCrl()).entries.get(serial), 'Key Compromise');
  });
});
