import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { webcrypto } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { RaError } from '../../shared/errors/index.js';
import { BuiltinCa, x509 } from '../../shared/pki/index.js';
import { KeyedLock, NodeStore } from '../../shared/store/index.js';
import { BuiltinCas } from '../../services/gateway/cas/builtin-cas.js';
import { hasCrl } from '../../services/gateway/cas/cas.js';

// CRLs of the builtin CA (RFC 5280 §5): signed by the intermediate, verified by openssl against it,
// with CRL number, nextUpdate, authority key identifier and per-entry reason codes; and the builtin
// CA service's revocation store behind them.

const execFileP = promisify(execFile);
x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

async function csr(name: string): Promise<Uint8Array> {
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
  const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const r = await x509.Pkcs10CertificateRequestGenerator.create({
    name: `CN=${name}`,
    keys,
    signingAlgorithm: alg,
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: name }])],
  });
  return new Uint8Array(r.rawData);
}

describe('unit: CRL of the builtin CA', () => {
  let dir: string;
  let ca: BuiltinCa;
  let caFile: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ra-mesh-crl-'));
    ca = await BuiltinCa.loadOrCreate(join(dir, 'ca'), { name: 'crl-test' });
    caFile = join(dir, 'ca.pem');
    await writeFile(caFile, ca.intermediatePem() + ca.rootPem());
  });

  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** `openssl crl -text` of a DER CRL; throws unless the signature verifies against `cafile`. */
  async function opensslCrl(der: Uint8Array, cafile = caFile): Promise<string> {
    const file = join(dir, `c-${Math.random().toString(36).slice(2)}.crl`);
    await writeFile(file, der);
    const { stdout, stderr } = await execFileP('openssl', ['crl', '-inform', 'DER', '-in', file, '-text', '-noout', '-CAfile', cafile]);
    if (!/verify OK/.test(stderr)) throw new Error(`openssl: ${stderr}`);
    return stdout;
  }

  test('ok/entries with reasons, CRL number, nextUpdate, AKI; the signature verifies against the intermediate', async () => {
    const a = await ca.sign({ csrDer: await csr('a.example.test'), dnsNames: ['a.example.test'], ipAddresses: [], lifetimeMs: 3_600_000 });
    const b = await ca.sign({ csrDer: await csr('b.example.test'), dnsNames: ['b.example.test'], ipAddresses: [], lifetimeMs: 3_600_000 });
    const c = await ca.sign({ csrDer: await csr('c.example.test'), dnsNames: ['c.example.test'], ipAddresses: [], lifetimeMs: 3_600_000 });
    const thisUpdate = new Date('2030-01-01T00:00:00Z');
    const der = await ca.signCrl({
      number: 300,
      thisUpdate,
      nextUpdate: new Date('2030-01-08T00:00:00Z'),
      entries: [
        { serial: a.serial, reason: 1, revokedAt: new Date('2029-12-31T10:00:00Z') },
        { serial: b.serial, reason: 4, revokedAt: new Date('2029-12-31T11:00:00Z') },
        { serial: c.serial, reason: 0, revokedAt: new Date('2029-12-31T12:00:00Z') },
      ],
    });
    const text = await opensslCrl(der);
    assert.match(text, /Version 2/);
    assert.match(text, /Issuer: O = ra-mesh, CN = crl-test Intermediate CA/);
    assert.match(text, /Last Update: Jan  1 00:00:00 2030 GMT/);
    assert.match(text, /Next Update: Jan  8 00:00:00 2030 GMT/);
    assert.match(text, /X509v3 CRL Number:\s*\n\s*300\b/);
    assert.match(text, /X509v3 Authority Key Identifier:/);

    const crl = new x509.X509Crl(der);
    assert.equal(crl.entries.length, 3);
    assert.equal(crl.findRevoked(a.serial)?.reason, x509.X509CrlReason.keyCompromise);
    assert.equal(crl.findRevoked(b.serial)?.reason, x509.X509CrlReason.superseded);
    // RFC 5280 §5.3.1: reason unspecified is left out of the entry.
    assert.equal(crl.findRevoked(c.serial)?.reason, undefined);
    assert.equal(crl.findRevoked(c.serial)?.revocationDate.toISOString(), '2029-12-31T12:00:00.000Z');
    const blockOf = (serial: string) => text.split('Serial Number: ').find((p) => p.toLowerCase().startsWith(serial))!;
    assert.match(blockOf(a.serial), /CRL Reason Code:\s*\n\s*Key Compromise/);
    assert.match(blockOf(b.serial), /CRL Reason Code:\s*\n\s*Superseded/);
    assert.doesNotMatch(blockOf(c.serial), /CRL Reason Code/);
  });

  test('ok/an empty CRL is valid', async () => {
    const der = await ca.signCrl({ number: 1, thisUpdate: new Date(), nextUpdate: new Date(Date.now() + 86_400_000), entries: [] });
    assert.match(await opensslCrl(der), /No Revoked Certificates/);
  });

  test('fail/the CRL does not verify against another CA', async () => {
    const other = await BuiltinCa.loadOrCreate(join(dir, 'other'), { name: 'other' });
    const otherFile = join(dir, 'other.pem');
    await writeFile(otherFile, other.intermediatePem() + other.rootPem());
    const der = await ca.signCrl({ number: 2, thisUpdate: new Date(), nextUpdate: new Date(Date.now() + 86_400_000), entries: [] });
    await assert.rejects(opensslCrl(der, otherFile));
  });

  test('fail/CRL number must be a positive integer', async () => {
    for (const number of [0, -1, 1.5]) {
      await assert.rejects(ca.signCrl({ number, thisUpdate: new Date(), nextUpdate: new Date(), entries: [] }), (e) => e instanceof RaError && e.type === 'serverInternal');
    }
  });

  describe('builtin CA service: revocation store', () => {
    let db: NodeStore;
    let cas: BuiltinCas;

    before(async () => {
      db = await NodeStore.open(join(dir, 'gw-store'));
      cas = await BuiltinCas.create(join(dir, 'gw'), 'cas-test', db, new KeyedLock(), undefined, { crlUrl: 'http://crl.example.test/x.crl' });
    });

    after(async () => {
      await db.close();
    });

    const issue = (name: string, requestId: string) =>
      csr(name).then((d) => cas.createCertificate({ csrDer: d, dnsNames: [name], ipAddresses: [], lifetimeMs: 3_600_000, requestId, provenance: { path: ['e', 'gw'], origin: { node: 'e', dc: 'dc' }, accountId: 'a' } }));

    test('ok/revoke persists serial, reason and time; the CRL number grows; a repeat of the same request id is idempotent', async () => {
      assert.ok(hasCrl(cas));
      const first = await cas.currentCrl();
      const c1 = await issue('r1.example.test', '11111111-1111-4111-8111-111111111111');
      const leaf = new x509.X509Certificate(c1.chainPem.split('-----END CERTIFICATE-----')[0] + '-----END CERTIFICATE-----');
      assert.deepEqual(leaf.getExtension(x509.CRLDistributionPointsExtension)?.distributionPoints[0]?.distributionPoint?.fullName?.[0]?.uniformResourceIdentifier, 'http://crl.example.test/x.crl');
      const r = await cas.revokeCertificate({ serial: c1.serial, reason: 1, requestId: '22222222-2222-4222-8222-222222222222' });
      assert.equal(r.serial, c1.serial);
      assert.equal(r.reason, 1);
      const again = await cas.revokeCertificate({ serial: c1.serial, reason: 1, requestId: '22222222-2222-4222-8222-222222222222' });
      assert.equal(again.revokedAt.getTime(), r.revokedAt.getTime());
      const crl = await cas.currentCrl();
      assert.ok(crl.number > first.number);
      assert.equal(new x509.X509Crl(crl.der).findRevoked(c1.serial)?.reason, x509.X509CrlReason.keyCompromise);
      assert.match(await opensslCrl(crl.der, await caFileOf(cas)), new RegExp(c1.serial.toUpperCase()));
      assert.deepEqual(await cas.revokedCertificates(), [{ serial: c1.serial, reason: 1, revokedAt: r.revokedAt.toISOString() }]);
    });

    test('fail/another request for a revoked serial is alreadyRevoked; an unknown serial is malformed; nothing changes', async () => {
      const [rev] = await cas.revokedCertificates();
      const before = await cas.currentCrl();
      await assert.rejects(cas.revokeCertificate({ serial: rev!.serial, reason: 4, requestId: '33333333-3333-4333-8333-333333333333' }), (e) => e instanceof RaError && e.type === 'alreadyRevoked');
      await assert.rejects(cas.revokeCertificate({ serial: '0badc0de', reason: 1, requestId: '44444444-4444-4444-8444-444444444444' }), (e) => e instanceof RaError && e.type === 'malformed');
      const after = await cas.currentCrl();
      assert.equal(after.number, before.number);
      assert.deepEqual(Buffer.from(after.der), Buffer.from(before.der));
      assert.equal((await cas.revokedCertificates()).length, 1);
    });

    async function caFileOf(c: BuiltinCas): Promise<string> {
      const f = join(dir, 'gw-ca.pem');
      await writeFile(f, c.ca.intermediatePem() + (await readFile(join(dir, 'gw', 'ca', 'root.pem'), 'utf8')));
      return f;
    }
  });
});
