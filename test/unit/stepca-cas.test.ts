import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { webcrypto } from 'node:crypto';
import { createServer, request as httpsRequest, type Server } from 'node:https';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPair, exportPKCS8 } from 'jose';
import { stringify } from 'yaml';
import { casSchema, parseTopology } from '../../shared/config/index.js';
import { RaError } from '../../shared/errors/index.js';
import { createLogger } from '../../shared/logging/logger.js';
import { pemToDer, x509 } from '../../shared/pki/index.js';
import { KeyedLock, NodeStore } from '../../shared/store/index.js';
import { isFinalCasError } from '../../services/gateway/cas/cas-http.js';
import { createCas } from '../../services/gateway/cas/create-cas.js';
import type { CertificateAuthorityService, CreateCertificateRequest } from '../../services/gateway/cas/cas.js';
import { makeCsr } from '../harness/acme-client.js';
import { freePort } from '../harness/ports.js';
import { startStepCa, stepCaBinary, type StepCa } from '../harness/step-ca.js';
import { makeTestServerTls } from '../harness/tls.js';
import { opensslVerify, pemCerts, sanNames } from '../harness/tools.js';

// The stepca backend called directly (no mesh) against a real step-ca built from Debian's
// smallstep/certificates 0.19 (test/harness/step-ca.ts): tokens, root pinning, lifetimes, error
// mapping and revocation as step-ca itself answers them.

const built = await stepCaBinary();
const skip = 'missing' in built ? built.missing : false;

describe('stepca CA service against a real step-ca', { skip, timeout: 300_000 }, () => {
  let ca: StepCa;
  let dir: string;
  let db: NodeStore;
  const stores: NodeStore[] = [];

  before(async () => {
    ca = await startStepCa({ claims: { minTLSCertDuration: '10s', maxTLSCertDuration: '6h', defaultTLSCertDuration: '1h' } });
    dir = await mkdtemp(join(tmpdir(), 'ra-mesh-stepca-unit-'));
    db = await NodeStore.open(join(dir, 'db'));
    stores.push(db);
  });

  after(async () => {
    for (const s of stores) await s.close().catch(() => undefined);
    await ca?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** The backend from a `cas` block as the YAML gives it (zod defaults applied), in its own store unless shared. */
  async function backend(cas: Record<string, unknown>, opts: { store?: NodeStore } = {}): Promise<CertificateAuthorityService> {
    const topology = parseTopology(
      stringify({ mesh: 'm', stateDir: join(dir, 'state'), nats: { hub: 'nats://127.0.0.1:4222', leafnodeListen: '127.0.0.1:7422', dcs: {} }, nodes: [{ id: 'gw', role: 'gateway', dc: 'core', cas }] }),
      join(dir, 'topology.yaml'),
      dir,
    );
    let store = opts.store;
    if (!store) {
      store = await NodeStore.open(join(dir, `db-${stores.length}`));
      stores.push(store);
    }
    return createCas(casSchema.parse(cas), { topology, nodeId: 'gw', db: store, locks: new KeyedLock(), log: createLogger('test', {}, { level: 'silent' }) });
  }

  const jwkKeyFile = () => ({ type: 'stepca', url: ca.url, rootFingerprint: ca.rootFingerprint, timeout: '5s', provisioner: { type: 'jwk', name: ca.jwk.name, keyFile: ca.jwk.keyFile } });

  async function request(names: string[], lifetimeMs = 3_600_000, extra: Partial<CreateCertificateRequest> = {}): Promise<CreateCertificateRequest> {
    return {
      csrDer: new Uint8Array(Buffer.from(await makeCsr(names), 'base64url')),
      dnsNames: names,
      ipAddresses: [],
      lifetimeMs,
      requestId: `req-${Math.random().toString(36).slice(2)}`,
      provenance: { path: ['edge', 'gw'], origin: { node: 'edge', dc: 'dc' }, accountId: 'acct' },
      ...extra,
    };
  }

  async function rejection(p: Promise<unknown>): Promise<RaError> {
    try {
      await p;
    } catch (e) {
      assert.ok(e instanceof RaError, `not an RaError: ${String(e)}`);
      return e;
    }
    assert.fail('expected a rejection');
  }

  const signed = () => ca.signedSerials().length;

  test('ok/jwk keyFile (PEM): the certificate chains to the step-ca root, serial and notAfter as step-ca logged them', async () => {
    const cas = await backend(jwkKeyFile());
    const t0 = Math.floor(Date.now() / 1000) * 1000;
    const res = await cas.createCertificate(await request(['a.corp.test', 'b.corp.test'], 2 * 3_600_000));
    const t1 = Date.now();
    const [leaf, inter] = pemCerts(res.chainPem);
    assert.ok(leaf && inter, 'leaf and intermediate');
    assert.match(await opensslVerify(dir, res.chainPem, ca.rootPem), /OK/);
    assert.deepEqual(sanNames(leaf), ['a.corp.test', 'b.corp.test']);
    assert.equal(res.serial, leaf.serialNumber.replace(/^(00)+/, '').toLowerCase());
    assert.match(res.serial, /^[0-9a-f]+$/);
    assert.ok(!res.serial.startsWith('00'));
    // step-ca logged the same serial (decimal) for this sign request.
    assert.ok(ca.signedSerials().includes(BigInt(`0x${res.serial}`).toString(10)));
    assert.equal(res.notAfter.getTime(), leaf.notAfter.getTime());
    // notAfter = step-ca's now + 2h (second precision).
    assert.ok(leaf.notAfter.getTime() >= t0 + 2 * 3_600_000 && leaf.notAfter.getTime() <= t1 + 2 * 3_600_000 + 1000, leaf.notAfter.toISOString());
    // Provisioner extension names the JWK provisioner and its kid.
    assert.match(ca.requests().filter((r) => r.path === '/1.0/sign').at(-1)!.provisioner ?? '', new RegExp(`${ca.jwk.name} \\(${ca.jwk.kid}\\)`));
    assert.equal(await cas.rootsPem(), ca.rootPem.trim() + '\n');
  });

  test('ok/jwk keyFile as a JWK; a requested notBefore is kept', async () => {
    const cas = await backend({ ...jwkKeyFile(), provisioner: { type: 'jwk', name: ca.jwk.name, keyFile: ca.jwk.jwkFile } });
    const notBefore = new Date(Math.floor(Date.now() / 1000) * 1000 + 3_600_000);
    const res = await cas.createCertificate(await request(['nb.corp.test'], 3_600_000, { notBefore }));
    const [leaf] = pemCerts(res.chainPem);
    assert.equal(leaf!.notBefore.getTime(), notBefore.getTime());
    assert.equal(leaf!.notAfter.getTime(), notBefore.getTime() + 3_600_000);
  });

  test('ok/jwk key decrypted from /provisioners with passwordFile (cached: one /provisioners call for two certificates)', async () => {
    const cas = await backend({ ...jwkKeyFile(), provisioner: { type: 'jwk', name: ca.jwk.name, passwordFile: ca.jwk.passwordFile } });
    const listed = () => ca.requests().filter((r) => r.path.startsWith('/provisioners')).length;
    const before = listed();
    for (const n of ['p1.corp.test', 'p2.corp.test']) {
      const res = await cas.createCertificate(await request([n]));
      assert.deepEqual(sanNames(pemCerts(res.chainPem)[0]!), [n]);
    }
    assert.equal(listed() - before, 1);
  });

  test('ok/x5c: lifetime capped at the x5c certificate; a rotated cert+key on disk is used on the next request', async () => {
    const cas = await backend({ ...jwkKeyFile(), provisioner: { type: 'x5c', name: ca.x5c.name, certFile: ca.x5c.certFile, keyFile: ca.x5c.keyFile } });
    const first = await cas.createCertificate(await request(['x1.corp.test'], 3_600_000));
    assert.match(ca.requests().filter((r) => r.path === '/1.0/sign').at(-1)!.provisioner ?? '', new RegExp(ca.x5c.name));
    assert.ok(first.notAfter.getTime() > Date.now() + 3_000_000);
    const rotated = await ca.x5c.rotate(20 * 60_000);
    const second = await cas.createCertificate(await request(['x2.corp.test'], 3_600_000));
    // Only the new 20-minute credential can have capped it.
    assert.equal(second.notAfter.getTime(), rotated.notAfter.getTime());
  });

  test('ok/revoke at step-ca: decimal serial, a repeat of the request gets the first answer, another request alreadyRevoked', async () => {
    const cas = await backend(jwkKeyFile());
    const res = await cas.createCertificate(await request(['r.corp.test']));
    const r1 = await cas.revokeCertificate({ serial: res.serial, reason: 1, requestId: 'rev-1' });
    assert.equal(r1.serial, res.serial);
    assert.equal(r1.reason, 1);
    const revokes = ca.requests().filter((r) => r.path === '/1.0/revoke');
    assert.equal(revokes.at(-1)!.status, 200);
    assert.equal(revokes.at(-1)!.serial, BigInt(`0x${res.serial}`).toString(10));
    const again = await cas.revokeCertificate({ serial: res.serial, reason: 1, requestId: 'rev-1' });
    assert.deepEqual(again, r1);
    const other = await rejection(cas.revokeCertificate({ serial: res.serial, reason: 4, requestId: 'rev-2' }));
    assert.equal(other.type, 'alreadyRevoked');
    // step-ca itself refused the second revocation.
    const last = ca.requests().filter((r) => r.path === '/1.0/revoke').at(-1)!;
    assert.equal(last.status, 400);
  });

  test('ok/revoke whose answer is lost in transit: the retry is told "already revoked", which is this request\'s own revocation', async () => {
    // A TLS proxy in front of step-ca (certificate from step-ca's intermediate, so the pin holds) that
    // forwards the first revoke and then cuts the connection instead of passing step-ca's answer on.
    const interKey = await webcrypto.subtle.importKey('pkcs8', pemToDer(await readFile(ca.intermediateKeyFile, 'utf8'))[0]!, { name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']);
    const proxyKeys = (await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
    const inter = new x509.X509Certificate(ca.intermediatePem);
    const proxyCert = await x509.X509CertificateGenerator.create({
      serialNumber: '01aa',
      subject: 'CN=127.0.0.1',
      issuer: inter.subject,
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 3_600_000),
      publicKey: proxyKeys.publicKey,
      signingKey: interKey,
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
      extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'ip', value: '127.0.0.1' }]), new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth])],
    });
    const keyPem = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', proxyKeys.privateKey)).toString('base64');
    const seen: string[] = [];
    let cut = 0;
    const srv: Server = createServer({ cert: proxyCert.toString('pem') + '\n' + ca.intermediatePem, key: `-----BEGIN PRIVATE KEY-----\n${keyPem}\n-----END PRIVATE KEY-----\n` }, (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (d: Buffer) => chunks.push(d));
      req.on('end', () => {
        seen.push(`${req.method} ${req.url}`);
        const up = httpsRequest(`${ca.url}${req.url}`, { method: req.method, headers: { 'content-type': req.headers['content-type'] ?? 'application/json' }, ca: ca.rootPem }, (ans) => {
          const body: Buffer[] = [];
          ans.on('data', (d: Buffer) => body.push(d));
          ans.on('end', () => {
            if (req.url === '/1.0/revoke' && cut === 0) {
              cut++;
              req.socket.destroy();
              return;
            }
            res.writeHead(ans.statusCode ?? 502, { 'content-type': 'application/json' }).end(Buffer.concat(body));
          });
        });
        up.end(Buffer.concat(chunks));
      });
    });
    const port = await freePort();
    await new Promise<void>((r) => srv.listen(port, '127.0.0.1', () => r()));
    try {
      const store = await NodeStore.open(join(dir, 'db-lost'));
      stores.push(store);
      const direct = await backend(jwkKeyFile(), { store });
      const res = await direct.createCertificate(await request(['lost.corp.test']));
      const viaProxy = await backend({ ...jwkKeyFile(), url: `https://127.0.0.1:${port}` }, { store });
      const r = await viaProxy.revokeCertificate({ serial: res.serial, reason: 4, requestId: 'rev-lost' });
      assert.equal(r.serial, res.serial);
      assert.equal(cut, 1);
      assert.deepEqual(seen, ['POST /1.0/revoke', 'POST /1.0/revoke']);
      // step-ca revoked on the first call and refused the retry: the request is still answered as done.
      const log = ca.requests().filter((x) => x.path === '/1.0/revoke' && (x.serial === BigInt(`0x${res.serial}`).toString(10) || (x.error ?? '').includes(BigInt(`0x${res.serial}`).toString(10))));
      assert.deepEqual(log.map((x) => x.status), [200, 400]);
      // Another request for the same serial is alreadyRevoked.
      assert.equal((await rejection(viaProxy.revokeCertificate({ serial: res.serial, reason: 4, requestId: 'rev-other' }))).type, 'alreadyRevoked');
    } finally {
      await new Promise((r) => srv.close(r));
    }
  });

  test('fail/lifetime above maxTLSCertDuration: unauthorized with step-ca\'s reason', async () => {
    const cas = await backend(jwkKeyFile());
    const n = signed();
    const e = await rejection(cas.createCertificate(await request(['long.corp.test'], 10 * 3_600_000)));
    assert.equal(e.type, 'unauthorized');
    assert.match(e.detail, /step-ca.*more than the authorized maximum certificate duration/);
    assert.equal(signed(), n);
  });

  test('fail/wrong rootFingerprint: cas-config (final), nothing signed', async () => {
    const cas = await backend({ ...jwkKeyFile(), rootFingerprint: 'ab'.repeat(32) });
    const n = ca.requests().length;
    const e = await rejection(cas.createCertificate(await request(['fp.corp.test'])));
    assert.equal(e.type, 'serverInternal');
    assert.equal(e.reason, 'cas-config');
    assert.ok(isFinalCasError(e));
    assert.match(e.detail, /rootFingerprint/);
    assert.ok(ca.requests().slice(n).every((r) => r.path.startsWith('/root/')), 'only the bootstrap call reached step-ca');
    await rejection(cas.rootsPem());
  });

  test('fail/an impostor serving another root for the fingerprint is refused before any token is sent', async () => {
    // Not a fake of step-ca: an attacker at the CA's address answering GET /root/<fp> with its own root.
    const tls = await makeTestServerTls(join(dir, 'impostor'));
    const seen: string[] = [];
    const srv: Server = createServer({ cert: await readFile(tls.cert), key: await readFile(tls.key) }, (req, res) => {
      seen.push(`${req.method} ${req.url}`);
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ ca: ca.x5c.rootPem }));
    });
    const port = await freePort();
    await new Promise<void>((r) => srv.listen(port, '127.0.0.1', () => r()));
    try {
      const cas = await backend({ ...jwkKeyFile(), url: `https://127.0.0.1:${port}` });
      const e = await rejection(cas.createCertificate(await request(['mitm.corp.test'])));
      assert.equal(e.reason, 'cas-config');
      assert.match(e.detail, /does not match the configured rootFingerprint/);
      assert.deepEqual(seen, [`GET /root/${ca.rootFingerprint}`]);
    } finally {
      await new Promise((r) => srv.close(r));
    }
  });

  test('fail/bad provisioner key: step-ca answers 401, cas-credentials (final)', async () => {
    const other = await generateKeyPair('ES256', { extractable: true });
    const bad = join(dir, 'bad.key');
    await writeFile(bad, await exportPKCS8(other.privateKey));
    const cas = await backend({ ...jwkKeyFile(), provisioner: { type: 'jwk', name: ca.jwk.name, kid: ca.jwk.kid, keyFile: bad } });
    const n = signed();
    const e = await rejection(cas.createCertificate(await request(['bad.corp.test'])));
    assert.equal(e.reason, 'cas-credentials');
    assert.ok(isFinalCasError(e));
    assert.equal(ca.requests().filter((r) => r.path === '/1.0/sign').at(-1)!.status, 401);
    assert.equal(signed(), n);
  });

  test('fail/wrong password for the encryptedKey: cas-credentials, no sign call', async () => {
    const pw = join(dir, 'wrong.password');
    await writeFile(pw, 'not-the-password\n');
    const cas = await backend({ ...jwkKeyFile(), provisioner: { type: 'jwk', name: ca.jwk.name, passwordFile: pw } });
    const n = ca.requests().filter((r) => r.path === '/1.0/sign').length;
    const e = await rejection(cas.createCertificate(await request(['pw.corp.test'])));
    assert.equal(e.reason, 'cas-credentials');
    assert.match(e.detail, /could not be decrypted/);
    assert.equal(ca.requests().filter((r) => r.path === '/1.0/sign').length, n);
  });

  test('fail/x5c key that is not the certificate\'s: cas-credentials, no sign call', async () => {
    const other = await generateKeyPair('ES256', { extractable: true });
    const bad = join(dir, 'x5c-other.key');
    await writeFile(bad, await exportPKCS8(other.privateKey));
    const cas = await backend({ ...jwkKeyFile(), provisioner: { type: 'x5c', name: ca.x5c.name, certFile: ca.x5c.certFile, keyFile: bad } });
    const e = await rejection(cas.createCertificate(await request(['x5c-bad.corp.test'])));
    assert.equal(e.reason, 'cas-credentials');
    assert.match(e.detail, /not the key of the certificate/);
  });

  test('ok/the pinned root is kept in the store: a restart with step-ca down still serves the root; issuing waits (transient)', async () => {
    const store = await NodeStore.open(join(dir, 'db-pin'));
    stores.push(store);
    const first = await backend(jwkKeyFile(), { store });
    assert.equal(await first.rootsPem(), ca.rootPem.trim() + '\n');
    await ca.stop();
    try {
      const second = await backend(jwkKeyFile(), { store });
      assert.deepEqual(pemToDer(await second.rootsPem(), 'CERTIFICATE').map((d) => new x509.X509Certificate(d).subject), ['CN=ra-mesh test step-ca Root']);
      const e = await rejection(second.createCertificate(await request(['down.corp.test'])));
      assert.equal(e.reason, 'cas-unavailable');
      assert.equal(isFinalCasError(e), false);
    } finally {
      await ca.start();
    }
  });
});
