import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { stringify } from 'yaml';
import { parseDuration } from '../../shared/config/index.js';
import { AUDIT_FILE, auditDir, type AuditRecord } from '../../shared/audit/audit-log.js';
import type { CrlReason, ResultPayload } from '../../shared/envelope/index.js';
import { fingerprint, pemToDer } from '../../shared/pki/index.js';
import { authorizedUserCredentials, FakeCloudCas } from '../harness/fake-cloudcas.js';
import { EdgeDriver } from '../harness/edge-driver.js';
import { startTestMesh, type TestMesh } from '../harness/mesh.js';
import { makeCsr, TestAcmeClient } from '../harness/acme-client.js';
import { freePort } from '../harness/ports.js';
import { httpGet, opensslVerify, pemCerts, run, sanNames } from '../harness/tools.js';

// The cloudcas CA service of the gateway against a fake of Google Cloud CAS (REST API v1 and the
// OAuth 2.0 service-account flow, see test/harness/fake-cloudcas.ts) on an https loopback server with
// its own TLS CA (the backend's caFile). A real mesh: hub + one leaf nats-server, edge-a -> relay-1 ->
// gw. Certificates are ordered through the edge's ACME server, or put into edge-a's outbound stream as
// edge-a (its key and NATS credentials) when the test needs to know the envelope id.

const PROBLEM = 'urn:ietf:params:acme:error:';
const BIN = fileURLToPath(new URL('../../bin/ra-mesh.js', import.meta.url));
const EDGE = 'edge-a';
const EDGE_LIFETIME = '36h';

describe('integration: Google CAS (fake, REST v1) as the gateway CA service, edge -> relay -> gateway', { timeout: 120_000 }, () => {
  let dir: string;
  let fake: FakeCloudCas;
  let m: TestMesh;
  let edge: EdgeDriver;
  let http01Port: number;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ra-mesh-cloudcas-'));
    fake = await FakeCloudCas.start({ dir: join(dir, 'fake') });
    await fake.writeServiceAccountKey(join(dir, 'service-account.json'));
    http01Port = await freePort();
    m = await startTestMesh({
      nodes: [
        {
          id: 'gw',
          role: 'gateway',
          dc: 'core',
          policy: { allow: { dns: ['*.corp.test'] } },
          cas: {
            type: 'cloudcas',
            caPool: fake.caPool,
            certificateAuthority: fake.certificateAuthorityId,
            credentialsFile: join(dir, 'service-account.json'),
            endpoint: fake.url,
            caFile: fake.tlsCaFile,
            timeout: '3s',
          },
        },
        { id: 'relay-1', role: 'relay', dc: 'dc-a', parent: 'gw' },
        { id: EDGE, role: 'edge', dc: 'dc-a', parent: 'relay-1', policy: { defaultLifetime: EDGE_LIFETIME }, acme: { http01Port, hosts: { 'acme.corp.test': '127.0.0.1' } } },
      ],
    });
    edge = await EdgeDriver.open(m, EDGE);
  });

  after(async () => {
    await edge?.close();
    await m?.stop();
    await fake?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** An issue envelope signed by edge-a, put into edge-a's outbound stream; resolves with its id and result. */
  async function issue(name: string, timeoutMs?: number): Promise<{ id: string; r: ResultPayload }> {
    const { id, jws } = await edge.issueEnvelope([name]);
    return { id, r: await edge.exchange(id, jws, timeoutMs) };
  }

  async function revoke(serial: string, reason: CrlReason): Promise<{ id: string; r: ResultPayload }> {
    const { id, jws } = await edge.revokeEnvelope(serial, reason);
    return { id, r: await edge.exchange(id, jws) };
  }

  function leafSerial(r: ResultPayload): string {
    assert.equal(r.status, 'valid', JSON.stringify(r.problem));
    return pemCerts(r.certificate!)[0]!.serialNumber.toLowerCase().replace(/^(00)+/, '');
  }

  test('ok/an ACME order at the edge is issued by Google CAS via relay and gateway; the chain verifies against the pool root; lifetime from the edge policy', async () => {
    const client = await new TestAcmeClient(m.directory(EDGE), await readFile(m.edgeTlsCert(EDGE), 'utf8')).init();
    assert.equal((await client.register()).status, 201);
    const responder = await TestAcmeClient.http01Responder(http01Port);
    let chain: string;
    try {
      const o = await client.readyOrder(['acme.corp.test'], responder);
      assert.equal(o.order.status, 'ready', JSON.stringify(o.order));
      assert.equal((await client.post(o.order.finalize, { csr: await makeCsr(['acme.corp.test']) })).status, 200);
      const order = await client.poll(o.url, (b) => b.status === 'valid' || b.status === 'invalid', 30_000);
      assert.equal(order.status, 'valid', JSON.stringify(order));
      const res = await client.post(order.certificate, undefined);
      assert.equal(res.status, 200);
      chain = res.body;
    } finally {
      await responder.close();
    }
    const certs = pemCerts(chain);
    assert.equal(certs.length, 2, 'leaf + the pool intermediate; the root stays out of the chain');
    assert.deepEqual(sanNames(certs[0]!), ['acme.corp.test']);
    assert.match(await opensslVerify(dir, chain, fake.rootPem()), /OK/);
    // The gateway serves the pool's trust anchor from fetchCaCerts.
    const roots = pemToDer(await httpGet(m.rootsUrl()), 'CERTIFICATE').map(fingerprint);
    assert.deepEqual(roots, pemToDer(fake.rootPem(), 'CERTIFICATE').map(fingerprint));
    // Lifetime: the edge layer's defaultLifetime, sent as a Duration and honoured by the CA.
    const serial = certs[0]!.serialNumber.toLowerCase().replace(/^(00)+/, '');
    const atFake = fake.bySerial(serial);
    assert.ok(atFake, 'the fake created this certificate');
    assert.equal(atFake.lifetime, `${parseDuration(EDGE_LIFETIME) / 1000}s`);
    assert.equal(certs[0]!.notAfter.getTime() - certs[0]!.notBefore.getTime(), parseDuration(EDGE_LIFETIME));
    // The requestId at Google CAS is the envelope id the gateway recorded in its audit log.
    const audit = (await readFile(join(auditDir(m.topology, 'gw'), AUDIT_FILE), 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as AuditRecord);
    const rec = audit.find((a) => a.event === 'issued' && a.serial === serial);
    assert.ok(rec, 'audit record of the issuance');
    assert.deepEqual(rec.path, [EDGE, 'relay-1', 'gw']);
    assert.equal(atFake.requestId, rec.id);
  });

  test('ok/the fake saw requestId = the envelope id and a certificateId derived from it; one certificate', async () => {
    const { id, r } = await issue('req-id.corp.test');
    const calls = fake.callsOf('create', id);
    assert.equal(calls.length, 1);
    assert.equal(calls[0]!.requestId, id);
    assert.equal(calls[0]!.certificateId, `ramesh-${id}`);
    assert.match(calls[0]!.certificateId!, /^[a-z0-9-]{1,63}$/);
    const created = fake.certificatesFor(id);
    assert.equal(created.length, 1);
    assert.equal(created[0]!.name, `${fake.caPool}/certificates/ramesh-${id}`);
    assert.equal(leafSerial(r), created[0]!.serial);
    assert.deepEqual(r.hops.map((h) => h.node), ['relay-1']);
  });

  test('ok/the connection drops after the fake created the certificate: retried with the same requestId, one certificate, the client gets it', async () => {
    fake.inject({ method: 'create', mode: 'drop', count: 1 });
    const { id, r } = await issue('dropped.corp.test');
    assert.equal(fake.pendingFaults(), 0);
    const calls = fake.callsOf('create', id);
    assert.deepEqual(calls.map((c) => c.outcome), ['dropped', 200]);
    assert.equal(calls[1]!.replayed, true, 'the retry was answered from the requestId record');
    const created = fake.certificatesFor(id);
    assert.equal(created.length, 1, 'exactly one certificate at the CA');
    assert.equal(leafSerial(r), created[0]!.serial, 'the client got the one certificate the CA created');
    assert.equal(edge.results.get(id)!.length, 1);
  });

  test('ok/a retry past the requestId window meets ALREADY_EXISTS (same certificateId) and reads the certificate back: still one certificate', async () => {
    fake.requestIdWindowMs = 0;
    fake.inject({ method: 'create', mode: 'drop', count: 1 });
    try {
      const { id, r } = await issue('late-retry.corp.test');
      assert.deepEqual(fake.callsOf('create', id).map((c) => [c.outcome, c.status]), [['dropped', undefined], [409, 'ALREADY_EXISTS']]);
      const gets = fake.calls.filter((c) => c.method === 'get' && c.certificateId === `ramesh-${id}`);
      assert.deepEqual(gets.map((c) => c.outcome), [200], 'certificates.get of the existing certificate');
      assert.equal(fake.certificatesFor(id).length, 1);
      assert.equal(leafSerial(r), fake.certificatesFor(id)[0]!.serial);
    } finally {
      fake.requestIdWindowMs = 60 * 60_000;
    }
  });

  test('ok/a create call that hangs times out and is retried with the same requestId; one certificate', async () => {
    fake.inject({ method: 'create', mode: 'hang', count: 1 });
    const { id, r } = await issue('hung.corp.test');
    assert.deepEqual(fake.callsOf('create', id).map((c) => c.outcome), ['hung', 200]);
    assert.equal(fake.certificatesFor(id).length, 1);
    assert.equal(leafSerial(r), fake.certificatesFor(id)[0]!.serial);
  });

  test('ok/the access token is cached across issuances, fetched again after a 401 and refreshed after it expires', async () => {
    const before = fake.tokens.length;
    assert.ok(before >= 1, 'a token was fetched at start (fetchCaCerts)');
    const a = await issue('token-1.corp.test');
    const b = await issue('token-2.corp.test');
    assert.equal(fake.tokens.length, before, 'no token request for cached tokens');
    const current = fake.tokens.at(-1)!.token;
    assert.equal(fake.callsOf('create', a.id)[0]!.token, current);
    assert.equal(fake.callsOf('create', b.id)[0]!.token, current);

    // Revoked early at the token issuer: the API answers 401, the backend fetches one new token and retries.
    fake.tokenLifetimeSeconds = 1;
    try {
      fake.expireTokens();
      const c = await issue('token-3.corp.test');
      assert.equal(c.r.status, 'valid', JSON.stringify(c.r.problem));
      assert.deepEqual(fake.callsOf('create', c.id).map((x) => x.outcome), [401, 200]);
      assert.equal(fake.tokens.length, before + 1);
      // That token lives 1 s: past its expiry the backend refreshes it before the call (no 401 first).
      await new Promise((r) => setTimeout(r, 1_500));
      const d = await issue('token-4.corp.test');
      assert.equal(d.r.status, 'valid', JSON.stringify(d.r.problem));
      assert.deepEqual(fake.callsOf('create', d.id).map((x) => x.outcome), [200]);
      assert.equal(fake.tokens.length, before + 2);
      assert.equal(fake.callsOf('create', d.id)[0]!.token, fake.tokens.at(-1)!.token);
    } finally {
      fake.tokenLifetimeSeconds = 3599;
    }
  });

  test('ok/revoke through the mesh: the fake shows the certificate revoked with the mapped reason', async () => {
    const serial = leafSerial((await issue('revoke-me.corp.test')).r);
    const { id, r } = await revoke(serial, 1);
    assert.equal(r.kind, 'revoke');
    assert.equal(r.status, 'valid', JSON.stringify(r.problem));
    assert.equal(r.revocation!.serial, serial);
    assert.equal(r.revocation!.reason, 1);
    const atFake = fake.bySerial(serial)!;
    assert.equal(atFake.revocation?.reason, 'KEY_COMPROMISE');
    assert.equal(atFake.revocation?.requestId, id, 'requestId of the revoke call = the revoke envelope id');
    assert.equal((atFake.resource.revocationDetails as { revocationState: string }).revocationState, 'KEY_COMPROMISE');
  });

  test('fail/a second revoke by another request is alreadyRevoked; the first revocation stands', async () => {
    const serial = leafSerial((await issue('revoke-twice.corp.test')).r);
    assert.equal((await revoke(serial, 4)).r.status, 'valid');
    const { id, r } = await revoke(serial, 1);
    assert.equal(r.status, 'invalid');
    assert.equal(r.problem!.type, `${PROBLEM}alreadyRevoked`);
    assert.deepEqual(fake.callsOf('revoke', id).map((c) => [c.outcome, c.status]), [[400, 'FAILED_PRECONDITION']]);
    assert.equal(fake.bySerial(serial)!.revocation?.reason, 'SUPERSEDED');
  });

  test('fail/INVALID_ARGUMENT from Google CAS is a badCSR problem carrying Google\'s message; not retried', async () => {
    const message = 'Certificate request public key of type EC_P256 is not allowed by the issuance policy of this CaPool.';
    fake.inject({ method: 'create', mode: 'error', count: 1, error: { code: 400, status: 'INVALID_ARGUMENT', message } });
    const { id, r } = await issue('invalid.corp.test');
    assert.equal(r.status, 'invalid');
    assert.equal(r.problem!.type, `${PROBLEM}badCSR`);
    assert.ok(r.problem!.detail.includes(message), r.problem!.detail);
    assert.equal(fake.callsOf('create', id).length, 1);
    assert.equal(fake.certificatesFor(id).length, 0);
  });

  test('fail/PERMISSION_DENIED from Google CAS is an unauthorized problem; nothing is created', async () => {
    fake.deny('privateca.certificates.create');
    try {
      const { id, r } = await issue('denied.corp.test');
      assert.equal(r.status, 'invalid');
      assert.equal(r.problem!.type, `${PROBLEM}unauthorized`);
      assert.match(r.problem!.detail, /Permission 'privateca\.certificates\.create' denied/);
      assert.deepEqual(fake.callsOf('create', id).map((c) => [c.outcome, c.status]), [[403, 'PERMISSION_DENIED']]);
      assert.equal(fake.certificatesFor(id).length, 0);
    } finally {
      fake.allow('privateca.certificates.create');
    }
  });

  test('fail/UNAVAILABLE for a while is transient: the envelope waits on the queue and is issued once after Google CAS recovers', async () => {
    // More 503s than one delivery's attempts: the first delivery gives up (cas-unavailable, no answer
    // to the client), the gateway's queue delivers the envelope again after its retry delay.
    fake.inject({ method: 'create', mode: 'unavailable', count: 3 });
    fake.inject({ method: 'create', mode: 'error', count: 1, error: { code: 429, status: 'RESOURCE_EXHAUSTED', message: 'Quota exceeded for quota metric \'Certificate create requests\'.' } });
    const { id, r } = await issue('unavailable.corp.test', 40_000);
    assert.equal(r.status, 'valid', JSON.stringify(r.problem));
    assert.deepEqual(fake.callsOf('create', id).map((c) => c.outcome), [503, 503, 503, 429, 200]);
    assert.equal(fake.certificatesFor(id).length, 1);
    assert.equal(leafSerial(r), fake.certificatesFor(id)[0]!.serial);
    assert.equal(edge.results.get(id)!.length, 1, 'one answer, no problem document before it');
  });

  test('fail/the API answers 401 again after a token refresh: a cas-credentials problem to the client at once, nothing created', async () => {
    // Tokens that are dead on arrival (e.g. the account lost access between token and call).
    fake.tokenLifetimeSeconds = 0;
    try {
      fake.expireTokens();
      const tokens = fake.tokens.length;
      const { id, r } = await issue('dead-token.corp.test');
      assert.equal(r.status, 'invalid');
      assert.equal(r.problem!.type, `${PROBLEM}serverInternal`);
      assert.match(r.problem!.detail, /refused the gateway's credentials/);
      assert.deepEqual(fake.callsOf('create', id).map((c) => c.outcome), [401, 401], 'one refresh, one retry, then final');
      assert.equal(fake.tokens.length, tokens + 1);
      assert.equal(fake.certificatesFor(id).length, 0);
    } finally {
      fake.tokenLifetimeSeconds = 3599;
    }
  });

  test('fail/the token endpoint refuses the service-account key (invalid_grant): a cas-credentials problem, nothing created', async () => {
    fake.expireTokens();
    fake.setServiceAccountKeysEnabled(false);
    try {
      const { id, r } = await issue('disabled-key.corp.test');
      assert.equal(r.status, 'invalid');
      assert.equal(r.problem!.type, `${PROBLEM}serverInternal`);
      assert.match(r.problem!.detail, /refused the gateway's credentials/);
      assert.doesNotMatch(r.problem!.detail, /Invalid JWT|iam\.gserviceaccount/, 'internal causes stay in the log');
      assert.deepEqual(fake.callsOf('create', id).map((c) => c.outcome), [401]);
      assert.equal(fake.calls.at(-1)!.method, 'token');
      assert.equal(fake.calls.at(-1)!.outcome, 400);
    } finally {
      fake.setServiceAccountKeysEnabled(true);
    }
    // Once the key works again, so does issuance.
    assert.equal((await issue('key-back.corp.test')).r.status, 'valid');
  });

  test('fail/a credentials file that is not a service-account key stops the gateway at start, naming the file and the YAML path', async () => {
    const d = join(dir, 'bad-credentials');
    await mkdir(d, { recursive: true });
    await writeFile(join(d, 'adc.json'), JSON.stringify(authorizedUserCredentials()));
    const yaml = stringify({
      mesh: 'bad-credentials',
      stateDir: join(d, 'state'),
      nats: { hub: `nats://127.0.0.1:${await freePort()}` },
      nodes: [
        {
          id: 'gw',
          role: 'gateway',
          dc: 'core',
          http: `127.0.0.1:${await freePort()}`,
          // Relative to the topology file.
          cas: { type: 'cloudcas', caPool: fake.caPool, credentialsFile: 'adc.json', endpoint: fake.url, caFile: fake.tlsCaFile },
        },
      ],
    });
    await writeFile(join(d, 'topology.yaml'), yaml);
    const tokensBefore = fake.tokens.length;
    const err = await run(process.execPath, [BIN, 'up', join(d, 'topology.yaml'), '--no-nats'], { timeoutMs: 30_000, env: { RA_MESH_LOG_LEVEL: 'error' } }).then(
      () => assert.fail('the gateway started with an authorized_user credentials file'),
      (e: { code: number; out: string }) => e,
    );
    assert.equal(err.code, 1, err.out);
    assert.ok(err.out.includes(join(d, 'adc.json')), err.out);
    assert.match(err.out, /nodes\[0\]\.cas\.credentialsFile/);
    assert.match(err.out, /not a Google service-account key: its type is "authorized_user", expected "service_account"/);
    assert.doesNotMatch(err.out, /is up/);
    assert.equal(fake.tokens.length, tokensBefore, 'nothing was sent to Google');
  });
});
