import assert from 'node:assert/strict';
import { webcrypto } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import type { ResultPayload } from '../../shared/envelope/index.js';
import { readTlv, x509 } from '../../shared/pki/index.js';
import { httpsFetch, TestAcmeClient } from '../harness/acme-client.js';
import { EdgeDriver } from '../harness/edge-driver.js';
import { startTestMesh, type TestMesh } from '../harness/mesh.js';
import { freePort } from '../harness/ports.js';
import { pemCerts } from '../harness/tools.js';

// Renewal after expiry with the old key (policy renewAfterExpiry), on RFC 9773's newOrder "replaces":
// within every layer's window an order that replaces an expired certificate of the same account is
// ready at once and its CSR must carry the old key; outside a window the names must be validated
// again; each hop upstream (relay, gateway) checks the renewal again and refuses forged ones.

const PROBLEM = 'urn:ietf:params:acme:error:';
const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

/** A CSR (base64url DER) for `names` with the given key pair. */
async function csrWith(names: string[], keys: webcrypto.CryptoKeyPair): Promise<string> {
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: `CN=${names[0]}`,
    keys,
    signingAlgorithm: ALG,
    extensions: [new x509.SubjectAlternativeNameExtension(names.map((value) => ({ type: 'dns' as const, value })))],
  });
  return Buffer.from(csr.rawData).toString('base64url');
}

const newKeys = async () => (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;

/** RFC 9773 §4.1 certID, computed here from the DER itself: base64url(AKI keyIdentifier) "." base64url(serial INTEGER octets). */
function certIdOf(der: Uint8Array): string {
  const cert = readTlv(der, 0);
  const tbs = readTlv(der, cert.contentStart);
  let field = readTlv(der, tbs.contentStart);
  if (field.tag === 0xa0) field = readTlv(der, field.end); // [0] version
  assert.equal(field.tag, 0x02, 'serialNumber INTEGER');
  const serial = Buffer.from(der.subarray(field.contentStart, field.end));
  const aki = new x509.X509Certificate(der).getExtension(x509.AuthorityKeyIdentifierExtension)!.keyId!;
  return `${Buffer.from(aki, 'hex').toString('base64url')}.${serial.toString('base64url')}`;
}

const sleepUntil = async (t: number) => {
  while (Date.now() < t) await new Promise((r) => setTimeout(r, Math.min(200, t - Date.now())));
};

describe('integration: renewal after expiry with the old key', { timeout: 180_000 }, () => {
  let m: TestMesh;
  let ca: Record<string, string>;
  let http01Port: number;
  const drivers: Record<string, EdgeDriver> = {};
  const NAMES = ['dev-1.example.test', 'dev-2.example.test', 'dev-3.example.test', 'dev-4.example.test'];

  before(async () => {
    http01Port = await freePort();
    const acme = { http01Port, hosts: Object.fromEntries(NAMES.map((n) => [n, '127.0.0.1'])) };
    m = await startTestMesh({
      retransmitMs: 500,
      nodes: [
        { id: 'gw', role: 'gateway', dc: 'core', policy: { allow: { dns: ['*.example.test'] } } },
        { id: 'relay', role: 'relay', dc: 'dc-a', parent: 'gw', policy: { renewAfterExpiry: '1h' } },
        { id: 'relay-s', role: 'relay', dc: 'dc-a', parent: 'gw', policy: { renewAfterExpiry: '1s' } },
        // 61 s of lifetime from a notBefore one minute back: these certificates expire a second after issuance.
        { id: 'edge-a', role: 'edge', dc: 'dc-a', parent: 'relay', acme, policy: { defaultLifetime: '61s', renewAfterExpiry: '1h' } },
        { id: 'edge-s', role: 'edge', dc: 'dc-a', parent: 'relay-s', acme, policy: { defaultLifetime: '61s', renewAfterExpiry: '1h' } },
      ],
    });
    ca = { 'edge-a': await readFile(m.edgeTlsCert('edge-a'), 'utf8'), 'edge-s': await readFile(m.edgeTlsCert('edge-s'), 'utf8') };
  });

  after(async () => {
    for (const d of Object.values(drivers)) await d.close();
    await m?.stop();
  });

  /** A certificate for `name` from `edge` by http-01, with the given key; returns the client and the leaf. */
  async function issue(edge: string, name: string, keys: webcrypto.CryptoKeyPair, client?: TestAcmeClient) {
    const c = client ?? (await new TestAcmeClient(m.directory(edge), ca[edge]!).init());
    if (!client) await c.register();
    const responder = await TestAcmeClient.http01Responder(http01Port);
    try {
      const { url, order } = await c.readyOrder([name], responder);
      await c.post(order.finalize, { csr: await csrWith([name], keys) });
      const done = await c.poll(url, (o) => o.status === 'valid' || o.status === 'invalid');
      assert.equal(done.status, 'valid', JSON.stringify(done.error));
      const chain = (await c.post(done.certificate, undefined)).body;
      return { client: c, chain, der: new Uint8Array(pemCerts(chain)[0]!.rawData), leaf: pemCerts(chain)[0]! };
    } finally {
      await responder.close();
    }
  }

  /** Acts as `edge` on the bus (its credentials and key): sends a hand-made renewal envelope, returns the answer. */
  async function forgedRenewal(edge: string, name: string, renewedDer: Uint8Array, keys: webcrypto.CryptoKeyPair, accountId = 'acct-forged'): Promise<ResultPayload> {
    const d = (drivers[edge] ??= await EdgeDriver.open(m, edge));
    const { id, jws } = await d.issueEnvelope([name], {
      csr: await csrWith([name], keys),
      identifiers: [{ type: 'dns', value: name, validation: { method: 'renewal', at: new Date().toISOString(), from: 'serial:00' } }],
      accountId,
      renewalOf: Buffer.from(renewedDer).toString('base64url'),
    });
    return d.exchange(id, jws, 15_000);
  }

  let first: Awaited<ReturnType<typeof issue>>;
  let firstKeys: webcrypto.CryptoKeyPair;

  test('ok/an expired certificate renews within the window: ready without challenges, same key, RFC 9773 replaces', async () => {
    firstKeys = await newKeys();
    first = await issue('edge-a', NAMES[0]!, firstKeys);
    await sleepUntil(first.leaf.notAfter.getTime() + 500);
    const certId = certIdOf(first.der);
    const c = first.client;

    // RFC 9773 §4.2: renewalInfo is unauthenticated; an expired certificate's window is in the past.
    assert.match(c.dir.renewalInfo!, /\/acme\/renewal-info\/$/);
    const ri = await httpsFetch(`${c.dir.renewalInfo}${certId}`, { ca: ca['edge-a']! });
    assert.equal(ri.status, 200);
    assert.ok(Date.parse(ri.json().suggestedWindow.end) < Date.now(), JSON.stringify(ri.json()));
    assert.ok(Number(ri.headers['retry-after']) >= 60);

    const r = await c.post(c.dir.newOrder!, { identifiers: [{ type: 'dns', value: NAMES[0] }], replaces: certId });
    assert.equal(r.status, 201, r.body);
    const order = r.json();
    assert.equal(order.status, 'ready');
    assert.equal(order.replaces, certId);
    const authz = (await c.post(order.authorizations[0], undefined)).json();
    assert.equal(authz.status, 'valid');
    assert.deepEqual(authz.challenges, []);

    // fail/the CSR of a renewal must carry the old key: badCSR, and the order stays ready.
    const other = await c.post(order.finalize, { csr: await csrWith([NAMES[0]!], await newKeys()) });
    assert.equal(other.status, 400);
    assert.equal(other.json().type, `${PROBLEM}badCSR`);
    assert.equal((await c.post(r.headers.location as string, undefined)).json().status, 'ready');

    await c.post(order.finalize, { csr: await csrWith([NAMES[0]!], firstKeys) });
    const done = await c.poll(r.headers.location as string, (o) => o.status === 'valid' || o.status === 'invalid');
    assert.equal(done.status, 'valid', JSON.stringify(done.error));
    const renewed = pemCerts((await c.post(done.certificate, undefined)).body)[0]!;
    assert.ok(Buffer.from(renewed.publicKey.rawData).equals(Buffer.from(first.leaf.publicKey.rawData)), 'same key');
    assert.ok(renewed.notAfter > first.leaf.notAfter);
    assert.notEqual(renewed.serialNumber, first.leaf.serialNumber);
    assert.ok(await renewed.verify({ publicKey: await pemCerts(first.chain)[1]!.publicKey.export(), signatureOnly: true }), 'signed by the mesh CA');
  });

  test('fail/a certificate replaced by a finalized order cannot be replaced again (RFC 9773 alreadyReplaced)', async () => {
    const c = first.client;
    const r = await c.post(c.dir.newOrder!, { identifiers: [{ type: 'dns', value: NAMES[0] }], replaces: certIdOf(first.der) });
    assert.equal(r.status, 409);
    assert.equal(r.json().type, `${PROBLEM}alreadyReplaced`);
  });

  test('fail/replaces: unknown, malformed, or another account\'s certificate is malformed', async () => {
    const c = first.client;
    const stranger = await new TestAcmeClient(m.directory('edge-a'), ca['edge-a']!).init();
    await stranger.register();
    const keys = await newKeys();
    const mine = await issue('edge-a', NAMES[1]!, keys, c);
    const cases: Array<[string, TestAcmeClient, unknown]> = [
      ['fail/not a certID', c, 'not-a-cert-id'],
      ['fail/a number', c, 42],
      ['fail/unknown serial', c, `${certIdOf(mine.der).split('.')[0]}.AQIDBA`],
      ['fail/another account', stranger, certIdOf(mine.der)],
    ];
    for (const [name, client, replaces] of cases) {
      const r = await client.post(client.dir.newOrder!, { identifiers: [{ type: 'dns', value: NAMES[1] }], replaces });
      assert.equal(r.status, 400, name);
      assert.equal(r.json().type, `${PROBLEM}malformed`, name);
    }
  });

  let short: Awaited<ReturnType<typeof issue>>;
  let shortKeys: webcrypto.CryptoKeyPair;

  test('fail/outside an upstream window (relay-s: 1s) the edge grants no renewal: the order needs challenges again', async () => {
    shortKeys = await newKeys();
    short = await issue('edge-s', NAMES[2]!, shortKeys);
    await sleepUntil(short.leaf.notAfter.getTime() + 2500);
    const c = short.client;
    const r = await c.post(c.dir.newOrder!, { identifiers: [{ type: 'dns', value: NAMES[2] }], replaces: certIdOf(short.der) });
    assert.equal(r.status, 201);
    assert.equal(r.json().status, 'pending');
    const authz = (await c.post(r.json().authorizations[0], undefined)).json();
    assert.equal(authz.status, 'pending');
    assert.ok(authz.challenges.length > 0);
  });

  test('fail/relay-s refuses a renewal envelope outside its own window, whatever the edge claims', async () => {
    const r = await forgedRenewal('edge-s', NAMES[2]!, short.der, shortKeys);
    assert.equal(r.status, 'invalid');
    assert.equal(r.gateway.node, 'relay-s');
    assert.equal(r.problem!.type, `${PROBLEM}unauthorized`);
    assert.match(r.problem!.detail, /policy layer relay-s: .*renewAfterExpiry 1s/);
  });

  test('fail/the gateway refuses renewals of certificates issued to another edge or account, or revoked', async () => {
    // edge-a presents edge-s's certificate (relay's window of 1h passes it on).
    const foreign = await forgedRenewal('edge-a', NAMES[2]!, short.der, shortKeys);
    assert.equal(foreign.status, 'invalid');
    assert.equal(foreign.gateway.node, 'gw');
    assert.equal(foreign.problem!.type, `${PROBLEM}unauthorized`);
    assert.match(foreign.problem!.detail, /another edge or account/);

    // A revoked certificate: the edge grants no renewal, and a forged envelope is refused by the gateway.
    const keys = await newKeys();
    const rev = await issue('edge-a', NAMES[3]!, keys);
    const revoked = await rev.client.post(rev.client.dir.revokeCert!, { certificate: Buffer.from(rev.der).toString('base64url'), reason: 4 });
    assert.equal(revoked.status, 200, revoked.body);
    const r = await rev.client.post(rev.client.dir.newOrder!, { identifiers: [{ type: 'dns', value: NAMES[3] }], replaces: certIdOf(rev.der) });
    assert.equal(r.json().status, 'pending');
    // As the account that holds it (its id ends the kid URL), so that only the revocation stands in the way.
    const forged = await forgedRenewal('edge-a', NAMES[3]!, rev.der, keys, rev.client.kid!.split('/').at(-1)!);
    assert.equal(forged.problem!.type, `${PROBLEM}unauthorized`);
    assert.match(forged.problem!.detail, /was revoked at .* cannot be renewed with its key/);
  });
});
