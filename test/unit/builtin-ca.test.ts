import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, webcrypto } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, unlink, writeFile, copyFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import {
  BasicConstraintsExtension,
  ExtendedKeyUsage,
  ExtendedKeyUsageExtension,
  KeyUsageFlags,
  KeyUsagesExtension,
  Pkcs10CertificateRequestGenerator,
  SubjectAlternativeNameExtension,
  X509Certificate,
  X509ChainBuilder,
  type JsonGeneralName,
} from '../../shared/pki/x509.js';
import { RaError } from '../../shared/errors/index.js';
import { BuiltinCa, CA_FILES, pemToDer, type SignRequest } from '../../shared/pki/index.js';
import { readTlv, splitSigned, time } from '../../shared/pki/der.js';

type KeyKind = 'ec-p256' | 'ec-p384' | 'rsa-2048' | 'rsa-3072' | 'rsa-4096' | 'ed25519';

const ALGS: Record<KeyKind, { gen: Record<string, unknown>; sign: Record<string, unknown> }> = {
  'ec-p256': { gen: { name: 'ECDSA', namedCurve: 'P-256' }, sign: { name: 'ECDSA', hash: 'SHA-256' } },
  'ec-p384': { gen: { name: 'ECDSA', namedCurve: 'P-384' }, sign: { name: 'ECDSA', hash: 'SHA-384' } },
  'rsa-2048': { gen: rsa(2048), sign: { name: 'RSASSA-PKCS1-v1_5' } },
  'rsa-3072': { gen: rsa(3072), sign: { name: 'RSASSA-PKCS1-v1_5' } },
  'rsa-4096': { gen: rsa(4096), sign: { name: 'RSASSA-PKCS1-v1_5' } },
  ed25519: { gen: { name: 'Ed25519' }, sign: { name: 'Ed25519' } },
};

function rsa(modulusLength: number): Record<string, unknown> {
  return { name: 'RSASSA-PKCS1-v1_5', modulusLength, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' };
}

async function makeCsr(kind: KeyKind, dns: string[], ips: string[] = [], cn?: string): Promise<Uint8Array> {
  const alg = ALGS[kind];
  const keys = (await webcrypto.subtle.generateKey(alg.gen as never, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const san: JsonGeneralName[] = [
    ...dns.map((value): JsonGeneralName => ({ type: 'dns', value })),
    ...ips.map((value): JsonGeneralName => ({ type: 'ip', value })),
  ];
  const csr = await Pkcs10CertificateRequestGenerator.create(
    { name: `CN=${cn ?? dns[0] ?? ips[0]}`, keys, signingAlgorithm: alg.sign, extensions: [new SubjectAlternativeNameExtension(san)] },
    webcrypto,
  );
  return new Uint8Array(csr.rawData);
}

function hasOpenssl(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
const OPENSSL = hasOpenssl();

const DAY = 24 * 60 * 60 * 1000;
const tmpDirs: string[] = [];
async function tmpDir(): Promise<string> {
  const d = await mkdtemp(path.join(os.tmpdir(), 'ra-mesh-ca-'));
  tmpDirs.push(d);
  return d;
}

let dir: string;
let ca: BuiltinCa;
let ecCsr: Uint8Array;

before(async () => {
  dir = path.join(await tmpDir(), 'nested', 'ca');
  ca = await BuiltinCa.loadOrCreate(dir, { name: 'test' });
  ecCsr = await makeCsr('ec-p256', ['a.example.test', 'extra.example.test'], ['192.0.2.99']);
});

after(async () => {
  for (const d of tmpDirs) await rm(d, { recursive: true, force: true });
});

function leafOf(pem: string): X509Certificate {
  return new X509Certificate(pemToDer(pem)[0]!);
}

function sans(cert: X509Certificate): Array<{ type: string; value: string }> {
  return cert.getExtension(SubjectAlternativeNameExtension)!.names.items.map((n) => ({ type: n.type, value: n.value }));
}

/** openssl verify of leaf -> intermediate -> root, as a TLS server certificate, strict X.509. */
async function opensslVerify(chainPem: string): Promise<void> {
  const d = await tmpDir();
  const [leaf] = pemToDer(chainPem, 'CERTIFICATE');
  await writeFile(path.join(d, 'leaf.pem'), `-----BEGIN CERTIFICATE-----\n${Buffer.from(leaf!).toString('base64')}\n-----END CERTIFICATE-----\n`);
  const out = execFileSync(
    'openssl',
    [
      'verify', '-x509_strict', '-purpose', 'sslserver',
      '-CAfile', path.join(dir, CA_FILES.root),
      '-untrusted', path.join(dir, CA_FILES.intermediate),
      path.join(d, 'leaf.pem'),
    ],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
  );
  assert.match(out, /leaf\.pem: OK/);
}

test('ok/first-start-creates-store', async () => {
  const dirMode = (await stat(dir)).mode & 0o777;
  assert.equal(dirMode, 0o700);
  for (const f of Object.values(CA_FILES)) {
    const mode = (await stat(path.join(dir, f))).mode & 0o777;
    if (f.endsWith('.key.pem')) assert.equal(mode, 0o600, f);
    const pem = await readFile(path.join(dir, f), 'utf8');
    assert.match(pem, f.endsWith('.key.pem') ? /^-----BEGIN PRIVATE KEY-----\n/ : /^-----BEGIN CERTIFICATE-----\n/);
  }
  assert.equal(await readFile(path.join(dir, CA_FILES.root), 'utf8'), ca.rootPem());
  assert.equal(await readFile(path.join(dir, CA_FILES.intermediate), 'utf8'), ca.intermediatePem());
  assert.match(ca.rootFingerprint(), /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);

  const root = leafOf(ca.rootPem());
  const inter = leafOf(ca.intermediatePem());
  assert.equal(root.subject, 'O=ra-mesh, CN=test Root CA');
  assert.equal(inter.subject, 'O=ra-mesh, CN=test Intermediate CA');
  assert.equal(inter.issuer, root.subject);
  assert.equal((root.publicKey.algorithm as { namedCurve?: string }).namedCurve, 'P-384');
  assert.equal((inter.publicKey.algorithm as { namedCurve?: string }).namedCurve, 'P-256');
  const rootBc = root.getExtension(BasicConstraintsExtension)!;
  assert.deepEqual([rootBc.ca, rootBc.pathLength, rootBc.critical], [true, 1, true]);
  const interBc = inter.getExtension(BasicConstraintsExtension)!;
  assert.deepEqual([interBc.ca, interBc.pathLength, interBc.critical], [true, 0, true]);
  const rootKu = root.getExtension(KeyUsagesExtension)!;
  assert.equal(rootKu.usages, KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign);
  assert.ok(rootKu.critical);
  assert.ok(await root.verify({ publicKey: root.publicKey, signatureOnly: true }, webcrypto));
  assert.ok(await inter.verify({ publicKey: root.publicKey, signatureOnly: true }, webcrypto));
  const years = (c: X509Certificate) => (c.notAfter.getTime() - c.notBefore.getTime()) / (365.25 * DAY);
  assert.ok(Math.abs(years(root) - 10) < 0.01, `root lifetime ${years(root)}`);
  assert.ok(Math.abs(years(inter) - 5) < 0.01, `intermediate lifetime ${years(inter)}`);
});

test('ok/second-start-loads-same-ca', async () => {
  const logs: Array<{ obj: Record<string, unknown>; msg: string }> = [];
  const log = { info: (obj: Record<string, unknown>, msg: string) => logs.push({ obj, msg }), warn: () => undefined };
  const again = await BuiltinCa.loadOrCreate(dir, { name: 'another-name', log: log as never });
  assert.equal(again.rootFingerprint(), ca.rootFingerprint());
  assert.equal(again.intermediatePem(), ca.intermediatePem());
  assert.equal(logs.length, 1);
  assert.equal(logs[0]!.msg, 'builtin CA loaded');
  assert.equal(logs[0]!.obj.rootFingerprint, ca.rootFingerprint());
  // The reloaded CA issues certificates that chain to the same root.
  const signed = await again.sign({ csrDer: ecCsr, dnsNames: ['a.example.test'], ipAddresses: [], lifetimeMs: DAY });
  if (OPENSSL) await opensslVerify(signed.chainPem);
});

test('ok/leaf-chains-and-has-exactly-the-requested-names', async () => {
  const lifetimeMs = 7 * DAY;
  const before = Date.now();
  const signed = await ca.sign({ csrDer: ecCsr, dnsNames: ['a.example.test'], ipAddresses: [], lifetimeMs });
  const leaf = leafOf(signed.certificatePem);
  const chainCerts = pemToDer(signed.chainPem).map((d) => new X509Certificate(d));
  assert.equal(chainCerts.length, 2);
  assert.equal(signed.chainPem, signed.certificatePem + ca.intermediatePem());

  const root = leafOf(ca.rootPem());
  const inter = leafOf(ca.intermediatePem());
  const built = await new X509ChainBuilder({ certificates: [inter, root] }).build(leaf, webcrypto);
  assert.deepEqual(
    Array.from(built, (c) => c.subject),
    [leaf.subject, inter.subject, root.subject],
  );
  assert.ok(await leaf.verify({ publicKey: inter.publicKey, signatureOnly: true }, webcrypto));

  // The CSR asked for extra.example.test and 192.0.2.99 too: only the requested name is certified.
  assert.deepEqual(sans(leaf), [{ type: 'dns', value: 'a.example.test' }]);
  assert.equal(leaf.subject, 'CN=a.example.test');
  assert.equal(leaf.issuer, inter.subject);

  const bc = leaf.getExtension(BasicConstraintsExtension)!;
  assert.equal(bc.ca, false);
  assert.ok(bc.critical);
  const ku = leaf.getExtension(KeyUsagesExtension)!;
  assert.equal(ku.usages, KeyUsageFlags.digitalSignature);
  assert.ok(ku.critical);
  const eku = leaf.getExtension(ExtendedKeyUsageExtension)!;
  assert.deepEqual([...eku.usages], [ExtendedKeyUsage.serverAuth, ExtendedKeyUsage.clientAuth]);

  // Lifetime as requested; notBefore back-dated one minute by default.
  assert.ok(Math.abs(leaf.notAfter.getTime() - leaf.notBefore.getTime() - lifetimeMs) <= 1000);
  assert.ok(Math.abs(leaf.notBefore.getTime() - (before - 60_000)) <= 2000);
  assert.equal(signed.notBefore.getTime(), leaf.notBefore.getTime());
  assert.equal(signed.notAfter.getTime(), leaf.notAfter.getTime());
  assert.equal(signed.serial, leaf.serialNumber.toLowerCase());

  if (OPENSSL) await opensslVerify(signed.chainPem);
});

test('ok/explicit-not-before', async () => {
  const notBefore = new Date('2030-01-02T03:04:05.678Z');
  const signed = await ca.sign({ csrDer: ecCsr, dnsNames: ['a.example.test'], ipAddresses: [], lifetimeMs: 90 * DAY, notBefore });
  assert.equal(signed.notBefore.toISOString(), '2030-01-02T03:04:05.000Z');
  assert.equal(signed.notAfter.getTime() - signed.notBefore.getTime(), 90 * DAY);
});

test('ok/ip-and-dns-names', async () => {
  const signed = await ca.sign({
    csrDer: ecCsr,
    dnsNames: ['B.example.test', 'a.example.test'],
    ipAddresses: ['192.0.2.1', '2001:DB8:0:0:0:0:0:1'],
    lifetimeMs: DAY,
  });
  const leaf = leafOf(signed.certificatePem);
  assert.equal(leaf.subject, 'CN=b.example.test');
  assert.deepEqual(sans(leaf), [
    { type: 'dns', value: 'b.example.test' },
    { type: 'dns', value: 'a.example.test' },
    { type: 'ip', value: '192.0.2.1' },
    { type: 'ip', value: '2001:db8::1' },
  ]);
  if (OPENSSL) await opensslVerify(signed.chainPem);
});

test('ok/ip-only', async () => {
  const signed = await ca.sign({ csrDer: ecCsr, dnsNames: [], ipAddresses: ['192.0.2.99'], lifetimeMs: DAY });
  const leaf = leafOf(signed.certificatePem);
  assert.equal(leaf.subject, 'CN=192.0.2.99');
  assert.deepEqual(sans(leaf), [{ type: 'ip', value: '192.0.2.99' }]);
});

test('ok/long-name-not-in-cn', async () => {
  const long = `${'x'.repeat(60)}.example.test`; // > 64 characters: cannot be a CN (RFC 5280 ub-common-name)
  const signed = await ca.sign({ csrDer: ecCsr, dnsNames: [long], ipAddresses: [], lifetimeMs: DAY });
  const leaf = leafOf(signed.certificatePem);
  assert.equal(leaf.subject, '');
  assert.ok(leaf.getExtension(SubjectAlternativeNameExtension)!.critical);
  assert.deepEqual(sans(leaf), [{ type: 'dns', value: long }]);
  if (OPENSSL) await opensslVerify(signed.chainPem);
});

test('ok/serials-distinct-and-positive', async () => {
  const serials = new Set<string>();
  for (let i = 0; i < 50; i++) {
    const signed = await ca.sign({ csrDer: ecCsr, dnsNames: ['a.example.test'], ipAddresses: [], lifetimeMs: DAY });
    assert.match(signed.serial, /^[0-7][0-9a-f]{31}$/); // 16 bytes, top bit clear
    assert.notEqual(BigInt(`0x${signed.serial}`), 0n);
    assert.equal(leafOf(signed.certificatePem).serialNumber.toLowerCase(), signed.serial);
    serials.add(signed.serial);
  }
  assert.equal(serials.size, 50);
});

test('ok/lifetime-capped-at-intermediate-not-after', async () => {
  const inter = leafOf(ca.intermediatePem());
  const signed = await ca.sign({ csrDer: ecCsr, dnsNames: ['a.example.test'], ipAddresses: [], lifetimeMs: 100 * 365 * DAY });
  assert.equal(signed.notAfter.getTime(), inter.notAfter.getTime());
  assert.equal(leafOf(signed.certificatePem).notAfter.getTime(), inter.notAfter.getTime());
  if (OPENSSL) await opensslVerify(signed.chainPem);
});

const keyCases: Array<{ name: string; kind: KeyKind; keyUsage: number }> = [
  { name: 'ok/leaf-key/ec-p256', kind: 'ec-p256', keyUsage: KeyUsageFlags.digitalSignature },
  { name: 'ok/leaf-key/ec-p384', kind: 'ec-p384', keyUsage: KeyUsageFlags.digitalSignature },
  { name: 'ok/leaf-key/rsa-2048', kind: 'rsa-2048', keyUsage: KeyUsageFlags.digitalSignature | KeyUsageFlags.keyEncipherment },
  { name: 'ok/leaf-key/rsa-3072', kind: 'rsa-3072', keyUsage: KeyUsageFlags.digitalSignature | KeyUsageFlags.keyEncipherment },
  { name: 'ok/leaf-key/rsa-4096', kind: 'rsa-4096', keyUsage: KeyUsageFlags.digitalSignature | KeyUsageFlags.keyEncipherment },
  { name: 'ok/leaf-key/ed25519', kind: 'ed25519', keyUsage: KeyUsageFlags.digitalSignature },
];

for (const c of keyCases) {
  test(c.name, async () => {
    const csrDer = await makeCsr(c.kind, ['k.example.test']);
    const signed = await ca.sign({ csrDer, dnsNames: ['k.example.test'], ipAddresses: [], lifetimeMs: DAY });
    const leaf = leafOf(signed.certificatePem);
    assert.equal(leaf.getExtension(KeyUsagesExtension)!.usages, c.keyUsage);
    // The certified key is the CSR's key.
    const { Pkcs10CertificateRequest } = await import('../../shared/pki/x509.js');
    assert.deepEqual(new Uint8Array(leaf.publicKey.rawData), new Uint8Array(new Pkcs10CertificateRequest(csrDer).publicKey.rawData));
    assert.ok(await leaf.verify({ publicKey: leafOf(ca.intermediatePem()).publicKey, signatureOnly: true }, webcrypto));
    if (OPENSSL) await opensslVerify(signed.chainPem);
  });
}

async function rejectsRa(p: Promise<unknown>, type: string, detail: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof RaError, `expected RaError, got ${String(e)}`);
    assert.equal(e.type, type);
    assert.match(e.detail, detail);
    return true;
  });
}

const signFailCases: Array<{ name: string; req: () => SignRequest; type: string; detail: RegExp }> = [
  {
    name: 'fail/sign-tampered-csr',
    req: () => {
      const der = new Uint8Array(ecCsr);
      der[der.length - 1]! ^= 0x01;
      return { csrDer: der, dnsNames: ['a.example.test'], ipAddresses: [], lifetimeMs: DAY };
    },
    type: 'badCSR',
    detail: /signature is invalid/,
  },
  {
    name: 'fail/sign-no-names',
    req: () => ({ csrDer: ecCsr, dnsNames: [], ipAddresses: [], lifetimeMs: DAY }),
    type: 'rejectedIdentifier',
    detail: /at least one/,
  },
  {
    name: 'fail/sign-bad-ip',
    req: () => ({ csrDer: ecCsr, dnsNames: [], ipAddresses: ['300.1.1.1'], lifetimeMs: DAY }),
    type: 'rejectedIdentifier',
    detail: /not an IP address/,
  },
  {
    name: 'fail/sign-bad-lifetime',
    req: () => ({ csrDer: ecCsr, dnsNames: ['a.example.test'], ipAddresses: [], lifetimeMs: 0 }),
    type: 'serverInternal',
    detail: /lifetime/,
  },
  {
    name: 'fail/sign-after-intermediate-expiry',
    req: () => ({ csrDer: ecCsr, dnsNames: ['a.example.test'], ipAddresses: [], lifetimeMs: DAY, notBefore: new Date(Date.now() + 20 * 365 * DAY) }),
    type: 'serverInternal',
    detail: /expired/,
  },
];

for (const c of signFailCases) {
  test(c.name, async () => {
    await rejectsRa(ca.sign(c.req()), c.type, c.detail);
  });
}

async function copyStore(): Promise<string> {
  const d = await tmpDir();
  for (const f of Object.values(CA_FILES)) await copyFile(path.join(dir, f), path.join(d, f));
  return d;
}

const storeFailCases: Array<{ name: string; damage: (d: string) => Promise<void>; error: RegExp }> = [
  {
    name: 'fail/partial-store',
    damage: (d) => unlink(path.join(d, CA_FILES.intermediateKey)),
    error: /incomplete \(missing intermediate\.key\.pem\)/,
  },
  {
    name: 'fail/partial-store-only-keys',
    damage: async (d) => {
      await unlink(path.join(d, CA_FILES.root));
      await unlink(path.join(d, CA_FILES.intermediate));
    },
    error: /incomplete \(missing root\.pem, intermediate\.pem\)/,
  },
  {
    name: 'fail/corrupt-certificate',
    damage: (d) => writeFile(path.join(d, CA_FILES.intermediate), '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n'),
    error: /intermediate\.pem is not a valid certificate/,
  },
  {
    name: 'fail/corrupt-key',
    damage: (d) => writeFile(path.join(d, CA_FILES.rootKey), 'garbage'),
    error: /root\.key\.pem is not a valid private key/,
  },
  {
    name: 'fail/intermediate-from-another-ca',
    damage: async (d) => {
      const other = await tmpDir();
      await BuiltinCa.loadOrCreate(other);
      for (const f of [CA_FILES.intermediate, CA_FILES.intermediateKey]) await copyFile(path.join(other, f), path.join(d, f));
    },
    error: /intermediate\.pem is not issued by root\.pem/,
  },
  {
    name: 'fail/key-mismatch',
    damage: (d) => copyFile(path.join(d, CA_FILES.rootKey), path.join(d, CA_FILES.intermediateKey)),
    error: /intermediate\.key\.pem does not match intermediate\.pem/,
  },
];

for (const c of storeFailCases) {
  test(c.name, async () => {
    const d = await copyStore();
    await c.damage(d);
    await assert.rejects(BuiltinCa.loadOrCreate(d), c.error);
    // Nothing was regenerated.
    for (const f of Object.values(CA_FILES)) {
      const orig = await readFile(path.join(dir, f), 'utf8');
      const now = await readFile(path.join(d, f), 'utf8').catch(() => null);
      if (now !== null && c.name.startsWith('fail/partial')) assert.equal(now, orig, f);
    }
  });
}

test('ok/created-logs-root-fingerprint', async () => {
  const logs: Array<{ obj: Record<string, unknown>; msg: string }> = [];
  const log = { info: (obj: Record<string, unknown>, msg: string) => logs.push({ obj, msg }), warn: () => undefined };
  const fresh = await BuiltinCa.loadOrCreate(await tmpDir(), { log: log as never });
  assert.deepEqual(
    logs.map((l) => [l.msg, l.obj.rootFingerprint]),
    [['builtin CA created', fresh.rootFingerprint()]],
  );
  assert.notEqual(fresh.rootFingerprint(), ca.rootFingerprint());
  assert.equal(leafOf(fresh.rootPem()).subject, 'O=ra-mesh, CN=ra-mesh Root CA'); // default name
});

// The leaf is written with a small DER writer (shared/pki/der.ts) and signed with node:crypto. These
// cases rebuild each issued certificate's TBSCertificate with @peculiar/x509's generator from the
// same inputs (serial, validity, key, names) and require the two to be byte for byte the same.
interface SameAsGeneratorCase {
  name: string;
  kind: KeyKind;
  dns: string[];
  ips: string[];
  crlUrl?: string;
}
const sameAsGeneratorCases: SameAsGeneratorCase[] = [
  { name: 'ok/tbs-same-as-x509-generator/ec-dns-ip-crl', kind: 'ec-p256', dns: ['a.example.test', 'b.example.test'], ips: ['192.0.2.7'], crlUrl: 'http://gw.example.test:8080/crl' },
  { name: 'ok/tbs-same-as-x509-generator/wildcard-cn-utf8', kind: 'ec-p384', dns: ['*.example.test'], ips: [] },
  { name: 'ok/tbs-same-as-x509-generator/rsa-key-encipherment', kind: 'rsa-2048', dns: ['rsa.example.test'], ips: [] },
  { name: 'ok/tbs-same-as-x509-generator/ed25519-ipv6-only', kind: 'ed25519', dns: [], ips: ['2001:db8::1', '10.1.2.3'] },
  { name: 'ok/tbs-same-as-x509-generator/long-name-no-subject', kind: 'ec-p256', dns: [`${'l'.repeat(60)}.example.test`], ips: [] },
  { name: 'ok/tbs-same-as-x509-generator/many-names', kind: 'ec-p256', dns: Array.from({ length: 40 }, (_, i) => `host-${i}.example.test`), ips: [] },
];

for (const c of sameAsGeneratorCases) {
  test(c.name, async () => {
    const x509 = await import('../../shared/pki/x509.js');
    const csr = await makeCsr(c.kind, c.dns, c.ips, c.dns[0] ?? c.ips[0]);
    const signed = await ca.sign({ csrDer: csr, dnsNames: c.dns, ipAddresses: c.ips, lifetimeMs: 3 * DAY, ...(c.crlUrl ? { crlUrl: c.crlUrl } : {}) });
    const leafDer = pemToDer(signed.certificatePem)[0]!;
    const inter = leafOf(ca.intermediatePem());
    const interKey = await webcrypto.subtle.importKey(
      'pkcs8',
      pemToDer(await readFile(path.join(dir, CA_FILES.intermediateKey), 'utf8'), 'PRIVATE KEY')[0]!,
      { name: 'ECDSA', namedCurve: 'P-256' },
      false,
      ['sign'],
    );
    const spki = new Uint8Array(new x509.Pkcs10CertificateRequest(csr).publicKey.rawData);
    const cn = [...c.dns, ...c.ips].find((n) => n.length <= 64);
    const ski = inter.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId;
    // RFC 5280 §4.2.1.2 method 1: SHA-1 of the subjectPublicKey BIT STRING (after its unused-bits byte).
    const outer = readTlv(spki, 0);
    const bits = readTlv(spki, readTlv(spki, outer.contentStart).end);
    const leafKeyId = createHash('sha1').update(spki.subarray(bits.contentStart + 1, bits.end)).digest('hex');
    const expected = await x509.X509CertificateGenerator.create(
      {
        serialNumber: signed.serial,
        ...(cn !== undefined ? { subject: [{ CN: [cn] }] } : {}),
        issuer: inter.subjectName,
        notBefore: signed.notBefore,
        notAfter: signed.notAfter,
        publicKey: spki,
        signingKey: interKey,
        signingAlgorithm: { name: 'ECDSA', hash: { name: 'SHA-256' } },
        extensions: [
          new BasicConstraintsExtension(false, undefined, true),
          new KeyUsagesExtension(c.kind.startsWith('rsa') ? KeyUsageFlags.digitalSignature | KeyUsageFlags.keyEncipherment : KeyUsageFlags.digitalSignature, true),
          new ExtendedKeyUsageExtension([ExtendedKeyUsage.serverAuth, ExtendedKeyUsage.clientAuth], false),
          new x509.SubjectKeyIdentifierExtension(leafKeyId, false),
          new x509.AuthorityKeyIdentifierExtension(ski, false),
          new SubjectAlternativeNameExtension(
            [...c.dns.map((value): JsonGeneralName => ({ type: 'dns', value })), ...c.ips.map((value): JsonGeneralName => ({ type: 'ip', value }))],
            cn === undefined,
          ),
          ...(c.crlUrl ? [new x509.CRLDistributionPointsExtension([c.crlUrl], false)] : []),
        ],
      },
      webcrypto,
    );
    assert.equal(
      Buffer.from(splitSigned(leafDer).tbs).toString('hex'),
      Buffer.from(splitSigned(new Uint8Array(expected.rawData)).tbs).toString('hex'),
    );
    assert.ok(await new x509.X509Certificate(leafDer).verify({ publicKey: inter.publicKey, signatureOnly: true }, webcrypto));
    if (OPENSSL) await opensslVerify(signed.chainPem);
  });
}

test('ok/validity-utctime-until-2049-generalizedtime-from-2050', () => {
  // RFC 5280 §4.1.2.5: UTCTime (tag 0x17) for 1950-2049, GeneralizedTime (0x18) from 2050; seconds, Z.
  assert.equal(Buffer.from(time(new Date('2049-12-31T23:59:59.900Z'))).toString('latin1'), '\x17\x0d491231235959Z');
  assert.equal(Buffer.from(time(new Date('2050-01-01T00:00:00Z'))).toString('latin1'), '\x18\x0f20500101000000Z');
});
