import assert from 'node:assert/strict';
import { webcrypto } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { AUDIT_FILE, auditDir, type AuditRecord } from '../../shared/audit/audit-log.js';
import { parse, stringify } from 'yaml';
import { GatewayService } from '../../services/gateway/index.js';
import { createCas } from '../../services/gateway/cas/create-cas.js';
import { isFinalCasError } from '../../services/gateway/cas/cas-http.js';
import { casSchema, parseTopology, type Topology } from '../../shared/config/index.js';
import type { ResultPayload } from '../../shared/envelope/index.js';
import { RaError } from '../../shared/errors/index.js';
import { createLogger } from '../../shared/logging/logger.js';
import { x509 } from '../../shared/pki/index.js';
import { KeyedLock, NodeStore } from '../../shared/store/index.js';
import { TestAcmeClient } from '../harness/acme-client.js';
import { FakeVault, type FakeVaultRole } from '../harness/fake-vault.js';
import { EdgeDriver } from '../harness/edge-driver.js';
import { startTestMesh, type TestMesh } from '../harness/mesh.js';
import { freePort } from '../harness/ports.js';
import { opensslVerify, pemCerts } from '../harness/tools.js';

// The `vault` CA service of the gateway in a real mesh (hub + leaf nats-servers; edge-a -> relay-1 ->
// gateway) against the fake Vault of test/harness/fake-vault.ts (Vault's HTTP API over TLS, real
// signatures). The gateway is started by the test, once per `cas` configuration, on the same mesh.

const PROBLEM = 'urn:ietf:params:acme:error:';
const ROLE_ID = 'd5b3a0c2-7a4e-4b1f-9c77-gateway-role';
const SECRET_ID = 'f2a6c2e4-secret-id-one';
const JWT = 'eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6cmEtbWVzaDpnYXRld2F5In0.c2ln';
const ENV_VAR = 'RA_MESH_TEST_VAULT_SECRET_ID';

const role = (key_type: FakeVaultRole['key_type']): FakeVaultRole => ({
  key_type,
  allowed_domains: ['corp.test'],
  allow_subdomains: true,
  max_ttl: 7 * 86_400,
});
const ROLES = { 'gw-ec': role('ec'), 'gw-rsa': role('rsa'), 'gw-ed25519': role('ed25519'), 'gw-any': role('any') };

type KeyKind = 'ec' | 'rsa' | 'ed25519';

/** A CSR (base64url DER) with CN and SAN = `name`, for a fresh key of `kind`. */
async function csrFor(name: string, kind: KeyKind): Promise<string> {
  const alg =
    kind === 'ec'
      ? { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' }
      : kind === 'rsa'
        ? { name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' }
        : { name: 'Ed25519' };
  const keys = (await webcrypto.subtle.generateKey(alg as never, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create(
    { name: `CN=${name}`, keys, signingAlgorithm: alg as never, extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: name }])] },
    webcrypto as never,
  );
  return Buffer.from(csr.rawData).toString('base64url');
}

async function until<T>(what: string, fn: () => T | undefined, timeoutMs = 20_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('integration: vault CA service through edge -> relay -> gateway', { timeout: 150_000 }, () => {
  let dir: string;
  let m: TestMesh;
  let vault: FakeVault;
  let gw: GatewayService | undefined;
  let edge: EdgeDriver;
  let topologyText: string;
  let http01Port: number;
  const sentAt = new Map<string, number>();

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ra-mesh-vault-'));
    vault = await FakeVault.start({
      dir,
      roles: structuredClone(ROLES),
      approle: { roleId: ROLE_ID, secretIds: [SECRET_ID] },
      kubernetes: { role: 'ra-mesh-gateway', jwt: JWT },
    });
    http01Port = await freePort();
    m = await startTestMesh({
      nats: { queue: { duplicateWindow: '1s' } },
      external: ['gw'],
      retransmitMs: 500,
      nodes: [
        { id: 'gw', role: 'gateway', dc: 'core', policy: { allow: { dns: ['*.corp.test', '*.other.test'] } } },
        { id: 'relay-1', role: 'relay', dc: 'dc-a', parent: 'gw' },
        { id: 'edge-a', role: 'edge', dc: 'dc-a', parent: 'relay-1', acme: { http01Port, hosts: { 'acme.corp.test': '127.0.0.1' } } },
      ],
    });
    topologyText = await readFile(m.topologyFile, 'utf8');
    edge = await EdgeDriver.open(m, 'edge-a');
  });

  after(async () => {
    await gw?.stop();
    await edge?.close();
    await m?.stop();
    await vault?.stop();
    delete process.env[ENV_VAR];
    await rm(dir, { recursive: true, force: true });
  });

  /** The mesh's topology with the gateway's `cas` block set (paths in it relative to the topology file). */
  function withCas(cas: Record<string, unknown>): Topology {
    const doc = parse(topologyText) as { nodes: Array<Record<string, unknown>> };
    doc.nodes.find((n) => n.id === 'gw')!.cas = cas;
    return parseTopology(stringify(doc), m.topologyFile, m.dir);
  }

  /** (Re)starts the gateway with this `cas` block. */
  async function useGateway(cas: Record<string, unknown>): Promise<void> {
    await gw?.stop();
    gw = undefined;
    const g = await GatewayService.create({ topology: withCas(cas), nodeId: 'gw' });
    await g.start();
    gw = g;
  }

  const approleFile = (extra: Record<string, unknown> = {}) => ({
    type: 'vault',
    url: vault.url,
    caFile: vault.tlsCaFile,
    pkiMountPath: 'pki',
    pkiRoleDefault: 'gw-any',
    pkiRoleRSA: 'gw-rsa',
    pkiRoleEC: 'gw-ec',
    pkiRoleEd25519: 'gw-ed25519',
    auth: { type: 'approle', roleId: ROLE_ID, secretIdFile: 'vault-secret-id' },
    timeout: '2s',
    ...extra,
  });

  /** Into edge-a's outbound stream; waits for `count` more results of this id. A resend waits out the 1s dedupe window first. */
  async function exchange(id: string, jws: string, count = 1, timeoutMs = 20_000): Promise<ResultPayload[]> {
    const have = edge.results.get(id)?.length ?? 0;
    const last = sentAt.get(id);
    if (last !== undefined) await new Promise((r) => setTimeout(r, Math.max(0, last + 1_500 - Date.now())));
    await edge.send(id, jws);
    sentAt.set(id, Date.now());
    return edge.waitResults(id, have + count, timeoutMs);
  }

  const issueEnvelope = async (name: string, kind: KeyKind = 'ec') => edge.issueEnvelope([name], { csr: await csrFor(name, kind) });

  async function issue(name: string, kind: KeyKind = 'ec', timeoutMs?: number): Promise<ResultPayload> {
    const { id, jws } = await issueEnvelope(name, kind);
    return (await exchange(id, jws, 1, timeoutMs))[0]!;
  }

  function valid(r: ResultPayload): { leaf: x509.X509Certificate; serial: string } {
    assert.equal(r.status, 'valid', JSON.stringify(r.problem));
    const leaf = pemCerts(r.certificate!)[0]!;
    return { leaf, serial: leaf.serialNumber.toLowerCase() };
  }

  const revokeEnvelope = (serial: string, reason: 0 | 1 | 4 | 5) => edge.revokeEnvelope(serial, reason);

  const issuedFor = (name: string) => vault.issued.filter((c) => c.commonName === name);

  describe('approle with secretIdFile (caFile, roles by key type)', () => {
    before(async () => {
      await writeFile(join(m.dir, 'vault-secret-id'), `${SECRET_ID}\n`, { mode: 0o600 });
      await useGateway(approleFile());
    });

    test('ok/issued through the mesh; the chain verifies against the fake Vault\'s root; the role follows the key type', async () => {
      const root = vault.rootPem();
      assert.equal(await (await fetch(`${gw!.httpUrl}/roots.pem`)).text(), root);
      for (const [kind, wantRole] of [['ec', 'gw-ec'], ['rsa', 'gw-rsa'], ['ed25519', 'gw-ed25519']] as const) {
        const name = `${kind}.corp.test`;
        const r = await issue(name, kind);
        const { leaf, serial } = valid(r);
        assert.deepEqual(r.hops.map((h) => h.node), ['relay-1']);
        assert.match(await opensslVerify(dir, r.certificate!, root), /OK/);
        // Leaf then the intermediate; the root stays a trust anchor, not part of the chain.
        assert.equal(pemCerts(r.certificate!).length, 2);
        const rec = issuedFor(name);
        assert.equal(rec.length, 1, `one certificate for ${name}`);
        assert.equal(rec[0]!.role, wantRole);
        assert.equal(rec[0]!.keyType, kind);
        assert.equal(rec[0]!.serial, serial);
        // alt_names and ttl as Vault's sign endpoint takes them (lifetime 24h, the policy default).
        assert.equal(rec[0]!.body.alt_names, name);
        assert.equal(rec[0]!.body.ttl, '86400s');
        assert.equal(Math.round((leaf.notAfter.getTime() - Date.now()) / 3_600_000), 24);
      }
      // The token was cached: one login for the three issuances.
      assert.equal(vault.callsOf('login').length, 1);
    });

    test('ok/an ACME order at the edge (real ACME client, http-01) is finalized with a certificate Vault signed', async () => {
      const responder = await TestAcmeClient.http01Responder(http01Port);
      try {
        const client = await new TestAcmeClient(m.directory('edge-a'), await readFile(m.edgeTlsCert('edge-a'), 'utf8')).init();
        assert.equal((await client.register()).status, 201);
        const o = await client.readyOrder(['acme.corp.test'], responder);
        assert.equal(o.order.status, 'ready', JSON.stringify(o.order));
        const fin = await client.post(o.order.finalize, { csr: await csrFor('acme.corp.test', 'ec') });
        assert.equal(fin.status, 200, fin.body);
        const order = await client.poll(o.url, (b) => b.status === 'valid' || b.status === 'invalid', 20_000);
        assert.equal(order.status, 'valid', JSON.stringify(order));
        const chain = (await client.post(order.certificate, undefined)).body;
        assert.match(await opensslVerify(dir, chain, vault.rootPem()), /OK/);
        const rec = issuedFor('acme.corp.test');
        assert.equal(rec.length, 1);
        assert.equal(pemCerts(chain)[0]!.serialNumber.toLowerCase(), rec[0]!.serial);
      } finally {
        await responder.close();
      }
    });

    test('ok/a lifetime above the role\'s max_ttl: Vault caps it (with a warning); the gateway reports the certificate\'s own notAfter', async () => {
      vault.roles['gw-ec']!.max_ttl = 3_600;
      try {
        const r = await issue('capped.corp.test');
        const { leaf } = valid(r);
        const rec = issuedFor('capped.corp.test')[0]!;
        assert.equal(rec.requestedTtl, '86400s');
        assert.equal(rec.ttlSeconds, 3_600);
        assert.ok(Math.abs(leaf.notAfter.getTime() - Date.now() - 3_600_000) < 120_000, `notAfter ${leaf.notAfter.toISOString()}`);
        // The audit record carries the notAfter read from the certificate, not the lifetime asked for.
        const audit = (await readFile(join(auditDir(m.topology, 'gw'), AUDIT_FILE), 'utf8'))
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l) as AuditRecord);
        assert.equal(audit.find((a) => a.id === r.id && a.event === 'issued')?.notAfter, leaf.notAfter.toISOString());
      } finally {
        vault.roles['gw-ec']!.max_ttl = 7 * 86_400;
      }
    });

    test('ok/Vault no longer accepts the cached token: one new login (secret_id file read again), the call repeated once', async () => {
      // The orchestrator rotated the secret_id in the file, and the old token was revoked.
      const rotated = 'a9d1e8f0-secret-id-two';
      vault.secretIds.add(rotated);
      vault.secretIds.delete(SECRET_ID);
      await writeFile(join(m.dir, 'vault-secret-id'), `${rotated}\n`);
      vault.revokeAllTokens();
      const logins = vault.callsOf('login').length;
      const signs = vault.callsOf('sign').length;
      valid(await issue('rotated.corp.test'));
      assert.equal(vault.callsOf('login').length, logins + 1);
      assert.deepEqual(vault.callsOf('sign').slice(signs).map((c) => c.status), [403, 200]);
      assert.equal(issuedFor('rotated.corp.test').length, 1);
    });

    test('ok/the token expires between two issuances: renewed (renew-self) or a new login; both issued', async () => {
      vault.tokenTtlMs = 1_500;
      vault.revokeAllTokens();
      valid(await issue('before-expiry.corp.test'));
      const before = vault.callsOf('login').length + vault.callsOf('renew-self').length;
      const [token] = vault.liveTokens();
      assert.ok(token, 'a live short token');
      // Wait (bounded) until the token is past two thirds of its lease: the gateway must renew or log in again.
      await until('the token to age', () => Date.now() - token.createdAt >= 1_100 || undefined, 5_000);
      const signs = vault.callsOf('sign').length;
      valid(await issue('after-expiry.corp.test'));
      assert.ok(vault.callsOf('login').length + vault.callsOf('renew-self').length > before, 'renewed or logged in again');
      // Renewed or replaced before the call: no sign call was made with a dying token.
      assert.deepEqual(vault.callsOf('sign').slice(signs).map((c) => c.status), [200]);
      vault.tokenTtlMs = 3_600_000;
      vault.revokeAllTokens();
    });

    test('ok/revoke through the mesh: Vault shows it revoked; a redelivery gets the same answer; another request alreadyRevoked', async () => {
      const { leaf, serial } = valid(await issue('revoke-me.corp.test'));
      const { id, jws } = await revokeEnvelope(serial, 4);
      const [r] = await exchange(id, jws);
      assert.equal(r!.kind, 'revoke');
      assert.equal(r!.status, 'valid', JSON.stringify(r!.problem));
      assert.equal(r!.revocation!.serial, serial);
      assert.equal(r!.revocation!.reason, 4);
      // Vault got the serial in its colon form and lists it as revoked.
      const colon = issuedFor('revoke-me.corp.test')[0]!.serialNumber;
      assert.ok(vault.revoked.has(colon));
      assert.equal(colon.replace(/:/g, ''), serial);
      assert.equal(leaf.serialNumber.toLowerCase(), serial);
      const revokes = vault.callsOf('revoke').length;
      const both = await exchange(id, jws);
      assert.equal(both.length, 2);
      assert.deepEqual(both[1]!.revocation, r!.revocation);
      // Vault would answer success again; the gateway's record says it was revoked by another request.
      const second = await revokeEnvelope(serial, 1);
      const [again] = await exchange(second.id, second.jws);
      assert.equal(again!.status, 'invalid');
      assert.equal(again!.problem!.type, `${PROBLEM}alreadyRevoked`);
      assert.equal(vault.callsOf('revoke').length, revokes, 'Vault was not asked again');
    });

    test('fail/Vault refuses the name (400): rejectedIdentifier naming it, with Vault\'s message; nothing issued', async () => {
      const signs = vault.callsOf('sign').length;
      const r = await issue('x.other.test');
      assert.equal(r.status, 'invalid');
      // RFC 8555 §6.7: the CA will not issue for the identifier.
      assert.equal(r.problem!.type, `${PROBLEM}rejectedIdentifier`);
      assert.match(r.problem!.detail, /common name x\.other\.test not allowed by this role/);
      assert.deepEqual(r.problem!.subproblems?.map((s) => [s.type, s.identifier]), [[`${PROBLEM}rejectedIdentifier`, { type: 'dns', value: 'x.other.test' }]]);
      assert.equal(issuedFor('x.other.test').length, 0);
      assert.deepEqual(vault.callsOf('sign').slice(signs).map((c) => c.status), [400]);
    });

    test('fail/Vault answers 503 for a while: transient, issued once Vault answers again (exactly one certificate)', async () => {
      const signs = vault.callsOf('sign').length;
      // Every attempt of the first delivery is refused; the envelope stays queued and comes back.
      vault.inject('sign', 3, { status: 503 });
      const r = await issue('sealed.corp.test', 'ec', 30_000);
      valid(r);
      assert.equal(issuedFor('sealed.corp.test').length, 1);
      assert.deepEqual(vault.callsOf('sign').slice(signs).map((c) => c.status), [503, 503, 503, 200]);
      assert.equal(edge.results.get(r.id)!.length, 1, 'one answer to the client');
    });

    test('ok/the gateway starts while Vault is unavailable (503 on ca_chain); a request is issued once Vault answers', async () => {
      const reads = vault.callsOf('ca_chain').length;
      vault.inject('ca_chain', 3, { status: 503 });
      await useGateway(approleFile());
      assert.deepEqual(vault.callsOf('ca_chain').slice(reads).map((c) => c.status), [503, 503, 503], 'started without the roots');
      assert.deepEqual(gw!.rootFingerprints, []);
      valid(await issue('started-early.corp.test'));
      assert.equal(issuedFor('started-early.corp.test').length, 1);
      // /roots.pem asks Vault again and now answers.
      assert.match(await (await fetch(`${gw!.httpUrl}/roots.pem`)).text(), /BEGIN CERTIFICATE/);
    });

    test('fail/a sign call that times out: outcome-unknown problem, one sign call at Vault, also after the envelope is redelivered', async () => {
      const signs = vault.callsOf('sign').length;
      // Vault signs, but its answer never comes (the gateway's timeout is 2s).
      vault.inject('sign', 1, { hang: true, process: true });
      const { id, jws } = await issueEnvelope('lost-answer.corp.test');
      const [r] = await exchange(id, jws);
      assert.equal(r!.status, 'invalid');
      assert.equal(r!.problem!.type, `${PROBLEM}serverInternal`);
      assert.match(r!.problem!.detail, /outcome is unknown/);
      assert.deepEqual(vault.callsOf('sign').slice(signs).map((c) => c.status), ['hung']);
      // The same envelope again (the edge's outbox would resend it): the stored answer, no second sign call.
      const both = await exchange(id, jws);
      assert.deepEqual(both[1]!.problem, r!.problem);
      assert.equal(vault.callsOf('sign').length, signs + 1);
      assert.equal(issuedFor('lost-answer.corp.test').length, 1, 'Vault signed once; nothing was signed twice');
    });

    test('fail/the role\'s policy does not allow sign: one new login, then cas-credentials (never a loop)', async () => {
      vault.policies['pki-issuer'] = ['revoke'];
      try {
        const logins = vault.callsOf('login').length;
        const signs = vault.callsOf('sign').length;
        const r = await issue('denied.corp.test');
        assert.equal(r.status, 'invalid');
        assert.equal(r.problem!.type, `${PROBLEM}serverInternal`);
        assert.match(r.problem!.detail, /denied the gateway permission for the sign call/);
        assert.equal(vault.callsOf('login').length, logins + 1);
        assert.deepEqual(vault.callsOf('sign').slice(signs).map((c) => c.status), [403, 403]);
      } finally {
        vault.policies['pki-issuer'] = ['sign', 'revoke'];
      }
    });
  });

  describe('approle with secretIdEnv', () => {
    before(async () => {
      process.env[ENV_VAR] = 'not-the-secret-id';
      await useGateway(approleFile({ auth: { type: 'approle', roleId: ROLE_ID, secretIdEnv: ENV_VAR } }));
    });

    test('fail/a bad secret_id: cas-credentials problem, nothing signed', async () => {
      const logins = vault.callsOf('login:approle');
      const signs = vault.callsOf('sign').length;
      const issued = vault.issued.length;
      const r = await issue('bad-secret.corp.test');
      assert.equal(r.status, 'invalid');
      assert.equal(r.problem!.type, `${PROBLEM}serverInternal`);
      assert.match(r.problem!.detail, /refused the gateway's approle login; the operator must check/);
      // Vault's own words stay in the gateway's log.
      assert.doesNotMatch(r.problem!.detail, /invalid role or secret ID/);
      assert.deepEqual(vault.callsOf('login:approle').slice(logins.length).map((c) => c.status), [400]);
      assert.equal(vault.callsOf('sign').length, signs);
      assert.equal(vault.issued.length, issued);
    });

    test('ok/issued with the secret_id from the environment (read at each login)', async () => {
      process.env[ENV_VAR] = [...vault.secretIds][0]!;
      valid(await issue('env-secret.corp.test'));
      assert.equal(issuedFor('env-secret.corp.test').length, 1);
    });
  });

  describe('approle with a response-wrapping token', () => {
    before(async () => {
      vault.revokeAllTokens();
      await writeFile(join(m.dir, 'vault-wrapped'), vault.wrapSecretId([...vault.secretIds][0]!));
      await useGateway(approleFile({ auth: { type: 'approle', roleId: ROLE_ID, secretIdFile: 'vault-wrapped', isWrappingToken: true } }));
    });

    test('ok/the wrapping token is unwrapped (once) and its secret_id logs in', async () => {
      const unwraps = vault.callsOf('unwrap').length;
      valid(await issue('wrapped.corp.test'));
      assert.deepEqual(vault.callsOf('unwrap').slice(unwraps).map((c) => c.status), [200]);
      // A later login reuses the unwrapped secret_id: the single-use wrapping token is not unwrapped again.
      vault.revokeAllTokens();
      const logins = vault.callsOf('login').length;
      valid(await issue('wrapped-again.corp.test'));
      assert.equal(vault.callsOf('login').length, logins + 1);
      assert.equal(vault.callsOf('unwrap').length, unwraps + 1);
    });
  });

  describe('kubernetes auth', () => {
    before(async () => {
      await writeFile(join(m.dir, 'sa-token'), `${JWT}\n`);
      await useGateway(approleFile({ auth: { type: 'kubernetes', role: 'ra-mesh-gateway', tokenPath: 'sa-token' } }));
    });

    test('ok/issued after a kubernetes login with the service-account token file', async () => {
      const logins = vault.callsOf('login:kubernetes').length;
      valid(await issue('k8s.corp.test', 'rsa'));
      assert.deepEqual(vault.callsOf('login:kubernetes').slice(logins).map((c) => c.status), [200]);
      assert.equal(issuedFor('k8s.corp.test')[0]!.role, 'gw-rsa');
    });
  });

  describe('Vault Enterprise namespace', () => {
    let nsVault: FakeVault;
    before(async () => {
      nsVault = await FakeVault.start({ dir, namespace: 'team-a/pki', roles: structuredClone(ROLES), approle: { roleId: ROLE_ID, secretIds: [SECRET_ID] } });
      await writeFile(join(m.dir, 'vault-secret-id'), `${SECRET_ID}\n`);
      await useGateway({ ...approleFile({ url: nsVault.url, caFile: nsVault.tlsCaFile }), namespace: 'team-a/pki' });
    });
    after(async () => {
      await gw?.stop();
      gw = undefined;
      await nsVault?.stop();
    });

    test('ok/every call carries X-Vault-Namespace; issued in the namespace', async () => {
      const r = await issue('ns.corp.test');
      valid(r);
      assert.match(await opensslVerify(dir, r.certificate!, nsVault.rootPem()), /OK/);
      assert.ok(nsVault.calls.length >= 3);
      assert.ok(nsVault.calls.every((c) => c.namespace === 'team-a/pki' && c.status !== 404), JSON.stringify(nsVault.calls.map((c) => [c.op, c.namespace, c.status])));
    });

    test('fail/a namespace Vault does not have: 404, a configuration error (cas-config)', async () => {
      // The backend alone (the gateway would not start without its trust anchors).
      const topology = withCas({ ...approleFile({ url: nsVault.url, caFile: nsVault.tlsCaFile }), namespace: 'team-b' });
      const db = await NodeStore.open(join(dir, 'ns-store'));
      try {
        const cas = await createCas(casSchema.parse({ ...approleFile({ url: nsVault.url, caFile: nsVault.tlsCaFile }), namespace: 'team-b' }), {
          topology,
          nodeId: 'gw',
          db,
          locks: new KeyedLock(),
          log: createLogger('test'),
        });
        const err = await cas.rootsPem().then(
          () => assert.fail('roots read in a namespace that does not exist'),
          (e: unknown) => e as RaError,
        );
        assert.equal(err.reason, 'cas-config');
        const csr = Buffer.from(await csrFor('nope.corp.test', 'ec'), 'base64url');
        const signErr = await cas
          .createCertificate({ csrDer: csr, dnsNames: ['nope.corp.test'], ipAddresses: [], lifetimeMs: 3_600_000, requestId: 'r-ns', provenance: { path: ['edge-a', 'relay-1', 'gw'], origin: { node: 'edge-a', dc: 'dc-a' }, accountId: 'a' } })
          .then(
            () => assert.fail('signed in a namespace that does not exist'),
            (e: unknown) => e as RaError,
          );
        assert.equal(signErr.reason, 'cas-config');
        assert.ok(isFinalCasError(signErr));
        assert.equal(nsVault.issued.filter((c) => c.commonName === 'nope.corp.test').length, 0);
      } finally {
        await db.close();
      }
    });
  });

  test('ok/the backend answers a repeated revoke request id from its record, without asking Vault again', async () => {
    await gw?.stop();
    gw = undefined;
    await writeFile(join(m.dir, 'vault-secret-id'), [...vault.secretIds][0]!);
    const topology = withCas(approleFile());
    const db = await NodeStore.open(topology.storeDir('gw'));
    try {
      const cas = await createCas(casSchema.parse(approleFile()), { topology, nodeId: 'gw', db, locks: new KeyedLock(), log: createLogger('test') });
      const csr = Buffer.from(await csrFor('direct.corp.test', 'ec'), 'base64url');
      const provenance = { path: ['edge-a', 'relay-1', 'gw'], origin: { node: 'edge-a', dc: 'dc-a' }, accountId: 'a' };
      const signed = await cas.createCertificate({ csrDer: csr, dnsNames: ['direct.corp.test'], ipAddresses: [], lifetimeMs: 3_600_000, requestId: 'r-direct', provenance });
      const revokes = vault.callsOf('revoke').length;
      const first = await cas.revokeCertificate({ serial: signed.serial, reason: 1, requestId: 'rev-1' });
      // The gateway died before storing its result: the same revoke envelope is handled again.
      const repeat = await cas.revokeCertificate({ serial: signed.serial, reason: 1, requestId: 'rev-1' });
      assert.deepEqual(repeat, first);
      assert.equal(vault.callsOf('revoke').length, revokes + 1);
      await assert.rejects(cas.revokeCertificate({ serial: signed.serial, reason: 1, requestId: 'rev-2' }), (e: unknown) => e instanceof RaError && e.type === 'alreadyRevoked');
      await assert.rejects(cas.revokeCertificate({ serial: '7f00aa', reason: 1, requestId: 'rev-3' }), (e: unknown) => e instanceof RaError && e.type === 'malformed');
    } finally {
      await db.close();
    }
  });
});
