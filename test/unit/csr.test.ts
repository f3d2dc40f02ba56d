import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { webcrypto } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Pkcs10CertificateRequestGenerator, SubjectAlternativeNameExtension, type JsonGeneralName } from '../../shared/pki/x509.js';
import { RaError } from '../../shared/errors/index.js';
import { canonicalIp, csrNames, derToPem, parseCsr, pemToDer, type CsrInfo } from '../../shared/pki/index.js';

type KeyKind = 'ec-p256' | 'ec-p384' | 'rsa-1024' | 'rsa-2048' | 'rsa-pss-2048' | 'ed25519';

const ALGS: Record<KeyKind, { gen: Record<string, unknown>; sign: Record<string, unknown> }> = {
  'ec-p256': { gen: { name: 'ECDSA', namedCurve: 'P-256' }, sign: { name: 'ECDSA', hash: 'SHA-256' } },
  'ec-p384': { gen: { name: 'ECDSA', namedCurve: 'P-384' }, sign: { name: 'ECDSA', hash: 'SHA-384' } },
  'rsa-1024': { gen: rsa('RSASSA-PKCS1-v1_5', 1024), sign: { name: 'RSASSA-PKCS1-v1_5' } },
  'rsa-2048': { gen: rsa('RSASSA-PKCS1-v1_5', 2048), sign: { name: 'RSASSA-PKCS1-v1_5' } },
  'rsa-pss-2048': { gen: rsa('RSA-PSS', 2048), sign: { name: 'RSA-PSS', saltLength: 32 } },
  ed25519: { gen: { name: 'Ed25519' }, sign: { name: 'Ed25519' } },
};

function rsa(name: string, modulusLength: number): Record<string, unknown> {
  return { name, modulusLength, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' };
}

async function makeCsr(kind: KeyKind, opts: { cn?: string; dns?: string[]; ips?: string[]; extra?: JsonGeneralName[] } = {}): Promise<Uint8Array> {
  const alg = ALGS[kind];
  const keys = (await webcrypto.subtle.generateKey(alg.gen as never, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const san: JsonGeneralName[] = [
    ...(opts.dns ?? []).map((value): JsonGeneralName => ({ type: 'dns', value })),
    ...(opts.ips ?? []).map((value): JsonGeneralName => ({ type: 'ip', value })),
    ...(opts.extra ?? []),
  ];
  const csr = await Pkcs10CertificateRequestGenerator.create(
    {
      ...(opts.cn !== undefined ? { name: `CN=${opts.cn}` } : {}),
      keys,
      signingAlgorithm: alg.sign,
      extensions: san.length > 0 ? [new SubjectAlternativeNameExtension(san)] : [],
    },
    webcrypto,
  );
  return new Uint8Array(csr.rawData);
}

async function rejectsBadCsr(p: Promise<unknown>, detail: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof RaError, `expected RaError, got ${String(e)}`);
    assert.equal(e.type, 'badCSR');
    assert.match(e.detail, detail);
    return true;
  });
}

interface OkCase {
  name: string;
  make: () => Promise<Uint8Array>;
  input?: (der: Uint8Array) => Uint8Array | string;
  check: (info: CsrInfo) => void;
}

const okCases: OkCase[] = [
  {
    name: 'ok/ec-p256',
    make: () => makeCsr('ec-p256', { cn: 'a.example.test', dns: ['a.example.test', 'B.Example.Test', 'b.example.test'] }),
    check: (info) => {
      assert.equal(info.keyAlgorithm, 'EC');
      assert.equal(info.keyDescription, 'EC P-256');
      assert.deepEqual(info.dnsNames, ['a.example.test', 'b.example.test']);
      assert.deepEqual(info.ipAddresses, []);
      assert.equal(info.commonName, 'a.example.test');
      assert.deepEqual(csrNames(info), [
        { type: 'dns', value: 'a.example.test' },
        { type: 'dns', value: 'b.example.test' },
      ]);
    },
  },
  {
    name: 'ok/ec-p384',
    make: () => makeCsr('ec-p384', { dns: ['a.example.test'] }),
    check: (info) => {
      assert.equal(info.keyDescription, 'EC P-384');
      assert.equal(info.commonName, undefined);
      assert.deepEqual(csrNames(info), [{ type: 'dns', value: 'a.example.test' }]);
    },
  },
  {
    name: 'ok/rsa-2048',
    make: () => makeCsr('rsa-2048', { cn: 'rsa.example.test', dns: ['rsa.example.test'] }),
    check: (info) => {
      assert.equal(info.keyAlgorithm, 'RSA');
      assert.equal(info.keyDescription, 'RSA 2048');
      assert.deepEqual(info.dnsNames, ['rsa.example.test']);
    },
  },
  {
    name: 'ok/rsa-pss-2048',
    make: () => makeCsr('rsa-pss-2048', { dns: ['pss.example.test'] }),
    check: (info) => {
      assert.equal(info.keyAlgorithm, 'RSA');
      assert.match(info.keyDescription, /^RSA(-PSS)? 2048$/);
    },
  },
  {
    name: 'ok/ed25519',
    make: () => makeCsr('ed25519', { dns: ['ed.example.test'] }),
    check: (info) => {
      assert.equal(info.keyAlgorithm, 'Ed25519');
      assert.equal(info.keyDescription, 'Ed25519');
      assert.deepEqual(info.dnsNames, ['ed.example.test']);
    },
  },
  {
    name: 'ok/cn-not-in-san',
    make: () => makeCsr('ec-p256', { cn: 'CN.Example.Test', dns: ['san.example.test'] }),
    check: (info) => {
      assert.equal(info.commonName, 'CN.Example.Test');
      assert.deepEqual(info.dnsNames, ['san.example.test']);
      assert.deepEqual(csrNames(info), [
        { type: 'dns', value: 'san.example.test' },
        { type: 'dns', value: 'cn.example.test' },
      ]);
    },
  },
  {
    name: 'ok/cn-only',
    make: () => makeCsr('ec-p256', { cn: 'only.example.test' }),
    check: (info) => {
      assert.deepEqual(info.dnsNames, []);
      assert.deepEqual(csrNames(info), [{ type: 'dns', value: 'only.example.test' }]);
    },
  },
  {
    name: 'ok/cn-ip',
    make: () => makeCsr('ec-p256', { cn: '2001:DB8:0:0:0:0:0:1', ips: ['192.0.2.7'] }),
    check: (info) => {
      assert.deepEqual(csrNames(info), [
        { type: 'ip', value: '192.0.2.7' },
        { type: 'ip', value: '2001:db8::1' },
      ]);
    },
  },
  {
    name: 'ok/ipv6',
    make: () =>
      makeCsr('ec-p256', {
        ips: ['2001:DB8:0:0:0:0:0:1', '192.0.2.1', 'fe80:0:0:0:1:0:0:0', '2001:db8:0:1:0:0:0:1', '2001:0db8:0000:0000:0000:0000:0000:0001'],
      }),
    check: (info) => {
      assert.deepEqual(info.ipAddresses, ['2001:db8::1', '192.0.2.1', 'fe80::1:0:0:0', '2001:db8:0:1::1']);
      assert.deepEqual(
        csrNames(info).map((n) => n.type),
        ['ip', 'ip', 'ip', 'ip'],
      );
    },
  },
  {
    name: 'ok/pem-input',
    make: () => makeCsr('ec-p256', { dns: ['pem.example.test'] }),
    input: (der) => derToPem(der, 'CERTIFICATE REQUEST'),
    check: (info) => assert.deepEqual(info.dnsNames, ['pem.example.test']),
  },
  {
    name: 'ok/pem-bytes-input',
    make: () => makeCsr('ec-p256', { dns: ['pem.example.test'] }),
    input: (der) => new TextEncoder().encode(derToPem(der, 'NEW CERTIFICATE REQUEST')),
    check: (info) => assert.deepEqual(info.dnsNames, ['pem.example.test']),
  },
  {
    name: 'ok/base64url-input',
    make: () => makeCsr('ec-p256', { dns: ['b64.example.test'] }),
    input: (der) => Buffer.from(der).toString('base64url'),
    check: (info) => assert.deepEqual(info.dnsNames, ['b64.example.test']),
  },
];

for (const c of okCases) {
  test(c.name, async () => {
    const der = await c.make();
    const info = await parseCsr(c.input ? c.input(der) : der);
    assert.deepEqual(info.der, der);
    assert.ok(info.publicKeySpki.length > 0);
    c.check(info);
  });
}

interface FailCase {
  name: string;
  input: () => Promise<Uint8Array | string>;
  detail: RegExp;
}

const failCases: FailCase[] = [
  {
    name: 'fail/tampered-signature',
    input: async () => {
      const der = await makeCsr('ec-p256', { dns: ['a.example.test'] });
      der[der.length - 1]! ^= 0x01; // the signature is the last element of the CSR
      return der;
    },
    detail: /signature is invalid/,
  },
  {
    name: 'fail/tampered-signature-rsa',
    input: async () => {
      const der = await makeCsr('rsa-2048', { dns: ['a.example.test'] });
      der[der.length - 10]! ^= 0x80;
      return der;
    },
    detail: /signature is invalid/,
  },
  {
    name: 'fail/tampered-name',
    input: async () => {
      const der = await makeCsr('ec-p256', { dns: ['a.example.test'] });
      const at = Buffer.from(der).indexOf('a.example.test');
      der[at] = 'b'.charCodeAt(0); // the CSR now asks for b.example.test, which was never signed
      return der;
    },
    detail: /signature is invalid/,
  },
  { name: 'fail/garbage', input: async () => new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]), detail: /not a valid PKCS#10/ },
  { name: 'fail/garbage-text', input: async () => 'this is not a CSR!', detail: /neither PEM nor base64url/ },
  { name: 'fail/empty', input: async () => new Uint8Array(0), detail: /empty/ },
  {
    name: 'fail/truncated',
    input: async () => (await makeCsr('ec-p256', { dns: ['a.example.test'] })).subarray(0, 100),
    detail: /not a valid PKCS#10/,
  },
  {
    name: 'fail/trailing-bytes',
    input: async () => {
      const der = await makeCsr('ec-p256', { dns: ['a.example.test'] });
      return new Uint8Array([...der, 0]);
    },
    detail: /trailing bytes/,
  },
  {
    name: 'fail/pem-certificate-not-csr',
    input: async () => derToPem(await makeCsr('ec-p256', { dns: ['a.example.test'] }), 'CERTIFICATE'),
    detail: /no "CERTIFICATE REQUEST" PEM block/,
  },
  { name: 'fail/rsa-1024', input: () => makeCsr('rsa-1024', { dns: ['a.example.test'] }), detail: /RSA 1024 bits; at least 2048/ },
  {
    name: 'fail/email-san',
    input: () => makeCsr('ec-p256', { dns: ['a.example.test'], extra: [{ type: 'email', value: 'x@example.test' }] }),
    detail: /only DNS names and IP addresses/,
  },
];

for (const c of failCases) {
  test(c.name, async () => {
    await rejectsBadCsr(parseCsr(await c.input()), c.detail);
  });
}

test('ok/canonical-ip', () => {
  const cases: Array<[string, string | null]> = [
    ['192.0.2.1', '192.0.2.1'],
    ['2001:DB8::1', '2001:db8::1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['2001:db8::0:1', '2001:db8::1'],
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'],
    ['::', '::'],
    ['::1', '::1'],
    ['::ffff:192.0.2.1', '::ffff:c000:201'],
    ['192.0.2.256', null],
    ['fe80::1%eth0', null],
    ['10.0.0.0/8', null],
    ['a.example.test', null],
  ];
  for (const [input, want] of cases) assert.equal(canonicalIp(input), want, input);
});

test('ok/pem-round-trip', () => {
  const a = new Uint8Array(200).map((_, i) => i);
  const b = new Uint8Array([48, 0]);
  const pem = derToPem(a, 'CERTIFICATE') + 'junk between\n' + derToPem(b, 'PRIVATE KEY');
  assert.match(pem, /^-----BEGIN CERTIFICATE-----\n[A-Za-z0-9+/]{64}\n/);
  assert.deepEqual(pemToDer(pem), [a, b]);
  assert.deepEqual(pemToDer(pem, 'PRIVATE KEY'), [b]);
  assert.deepEqual(pemToDer('no pem here'), []);
  assert.throws(() => pemToDer('-----BEGIN X-----\nAAAA\n-----END Y-----\n'), /ends with/);
  assert.throws(() => pemToDer('-----BEGIN X-----\nA*AA\n-----END X-----\n'), /invalid base64/);
});

function hasOpenssl(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

test('ok/openssl-csr', { skip: hasOpenssl() ? false : 'openssl is not on PATH' }, async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ra-mesh-csr-'));
  try {
    const pem = execFileSync(
      'openssl',
      [
        'req', '-new', '-newkey', 'rsa:2048', '-nodes',
        '-keyout', path.join(dir, 'key.pem'),
        '-subj', '/CN=a.example.test',
        '-addext', 'subjectAltName=DNS:a.example.test,DNS:b.example.test',
      ],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const info = await parseCsr(pem);
    assert.equal(info.keyDescription, 'RSA 2048');
    assert.equal(info.commonName, 'a.example.test');
    assert.deepEqual(info.dnsNames, ['a.example.test', 'b.example.test']);
    assert.deepEqual(csrNames(info), [
      { type: 'dns', value: 'a.example.test' },
      { type: 'dns', value: 'b.example.test' },
    ]);
    // The same CSR as base64url DER, the way ACME finalize carries it.
    const der = pemToDer(pem)[0]!;
    assert.deepEqual((await parseCsr(Buffer.from(der).toString('base64url'))).dnsNames, info.dnsNames);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('ok/openssl-csr-ec', { skip: hasOpenssl() ? false : 'openssl is not on PATH' }, async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ra-mesh-csr-'));
  try {
    const pem = execFileSync(
      'openssl',
      [
        'req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
        '-keyout', path.join(dir, 'key.pem'),
        '-subj', '/CN=c.example.test',
        '-addext', 'subjectAltName=DNS:d.example.test,IP:2001:db8:0:0:0:0:0:5',
      ],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const info = await parseCsr(pem);
    assert.equal(info.keyDescription, 'EC P-256');
    assert.deepEqual(csrNames(info), [
      { type: 'dns', value: 'd.example.test' },
      { type: 'ip', value: '2001:db8::5' },
      { type: 'dns', value: 'c.example.test' },
    ]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

// parseCsr reads the DER itself. These cases parse a corpus of CSRs (every key type, every SAN type,
// rich openssl subjects and extensions, RSA-PSS parameters) with @peculiar/x509 as well and require
// the same answers.
async function peculiarView(der: Uint8Array) {
  const x509 = await import('../../shared/pki/x509.js');
  const req = new x509.Pkcs10CertificateRequest(der);
  const dnsNames: string[] = [];
  const ipAddresses: string[] = [];
  const emailAddresses: string[] = [];
  const uris: string[] = [];
  for (const ext of req.extensions) {
    if (ext.type !== '2.5.29.17') continue;
    for (const gn of new x509.SubjectAlternativeNameExtension(ext.rawData).names.items) {
      const add = (xs: string[], v: string) => void (xs.includes(v) || xs.push(v));
      if (gn.type === 'dns') add(dnsNames, gn.value.toLowerCase());
      else if (gn.type === 'ip') add(ipAddresses, canonicalIp(gn.value)!);
      else if (gn.type === 'email') add(emailAddresses, gn.value);
      else if (gn.type === 'url') add(uris, gn.value);
    }
  }
  const alg = req.signatureAlgorithm as unknown as { name: string; hash?: { name: string }; namedCurve?: string };
  const h = alg.hash?.name.replace('-', '');
  const signatureAlgorithm =
    alg.name === 'ECDSA' ? `ECDSA-${h}` : alg.name === 'RSASSA-PKCS1-v1_5' ? `${h}-RSA` : alg.name === 'RSA-PSS' ? `${h}-RSAPSS` : alg.name === 'EdDSA' ? alg.namedCurve : alg.name;
  const cn = req.subjectName.getField('CN')[0];
  return {
    dnsNames,
    ipAddresses,
    emailAddresses,
    uris,
    ...(cn ? { commonName: cn } : {}),
    signatureAlgorithm,
    extensions: [...req.extensions].map((e) => ({ oid: e.type, critical: e.critical })),
    publicKeySpki: Buffer.from(req.publicKey.rawData).toString('hex'),
  };
}

function opensslCsr(args: string[]): Promise<Uint8Array> {
  return (async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'ra-mesh-csr-'));
    try {
      const pem = execFileSync('openssl', ['req', '-new', '-nodes', '-keyout', path.join(dir, 'key.pem'), ...args], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      return pemToDer(pem)[0]!;
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  })();
}

const corpus: Array<{ name: string; make: () => Promise<Uint8Array>; openssl?: boolean }> = [
  ...(['ec-p256', 'ec-p384', 'rsa-2048', 'rsa-pss-2048', 'ed25519'] as const).flatMap((kind) => [
    { name: `ok/same-as-x509/${kind}/dns`, make: () => makeCsr(kind, { cn: 'A.Example.Test', dns: ['A.example.test', 'a.example.test', 'b.example.test'] }) },
    { name: `ok/same-as-x509/${kind}/ip`, make: () => makeCsr(kind, { dns: ['c.example.test'], ips: ['192.0.2.1', '2001:db8::1', '192.0.2.1'] }) },
    {
      name: `ok/same-as-x509/${kind}/email-url`,
      make: () => makeCsr(kind, { cn: 'dev', dns: ['d.example.test'], extra: [{ type: 'email', value: 'x@example.test' }, { type: 'url', value: 'spiffe://example.test/dev' }] }),
    },
  ]),
  { name: 'ok/same-as-x509/no-extensions', make: () => makeCsr('ec-p256', { cn: 'only-cn.example.test' }) },
  {
    name: 'ok/same-as-x509/openssl-rich-subject-and-extensions',
    openssl: true,
    make: () =>
      opensslCsr([
        '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-521',
        '-subj', '/C=DE/O=Acme, Inc./OU=IoT/CN=dev-1.example.test/emailAddress=ops@example.test',
        '-addext', 'subjectAltName=DNS:dev-1.example.test,IP:10.9.8.7,email:ops@example.test,URI:urn:dev:1',
        '-addext', 'keyUsage=critical,digitalSignature',
        '-addext', 'extendedKeyUsage=serverAuth,clientAuth',
        '-addext', 'basicConstraints=critical,CA:FALSE',
      ]),
  },
  {
    name: 'ok/same-as-x509/openssl-utf8-cn',
    openssl: true,
    make: () => opensslCsr(['-newkey', 'rsa:2048', '-utf8', '-subj', '/CN=gerät.example.test', '-addext', 'subjectAltName=DNS:xn--gert-7qa.example.test']),
  },
  {
    name: 'ok/same-as-x509/openssl-rsa-pss-sha384',
    openssl: true,
    make: () =>
      opensslCsr([
        '-newkey', 'rsa:2048', '-sha384', '-sigopt', 'rsa_padding_mode:pss', '-sigopt', 'rsa_pss_saltlen:48',
        '-subj', '/CN=pss.example.test', '-addext', 'subjectAltName=DNS:pss.example.test',
      ]),
  },
  { name: 'ok/same-as-x509/openssl-ed25519', openssl: true, make: () => opensslCsr(['-newkey', 'ed25519', '-subj', '/CN=ed.example.test']) },
  { name: 'ok/same-as-x509/openssl-ed448', openssl: true, make: () => opensslCsr(['-newkey', 'ed448', '-subj', '/O=x', '-addext', 'subjectAltName=DNS:ed448.example.test']) },
];

for (const c of corpus) {
  test(c.name, { skip: c.openssl && !hasOpenssl() ? 'openssl is not on PATH' : false }, async () => {
    const der = await c.make();
    const info = await parseCsr(der, { otherNames: true });
    const want = await peculiarView(der);
    assert.deepEqual(
      {
        dnsNames: info.dnsNames,
        ipAddresses: info.ipAddresses,
        emailAddresses: info.emailAddresses,
        uris: info.uris,
        ...(info.commonName !== undefined ? { commonName: info.commonName } : {}),
        signatureAlgorithm: info.signatureAlgorithm,
        extensions: info.extensions,
        publicKeySpki: Buffer.from(info.publicKeySpki).toString('hex'),
      },
      want,
    );
  });
}

const strictCases: Array<{ name: string; make: () => Promise<Uint8Array>; detail: RegExp; openssl?: boolean }> = [
  {
    name: 'fail/sha1-signature',
    openssl: true,
    make: () => opensslCsr(['-newkey', 'rsa:2048', '-sha1', '-subj', '/CN=old.example.test']),
    detail: /hash SHA-1 is not accepted/,
  },
  {
    name: 'fail/duplicate-san-extension',
    make: async () => {
      const keys = (await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
      const csr = await Pkcs10CertificateRequestGenerator.create(
        {
          keys,
          signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
          extensions: [
            new SubjectAlternativeNameExtension([{ type: 'dns', value: 'a.example.test' }]),
            new SubjectAlternativeNameExtension([{ type: 'dns', value: 'b.example.test' }]),
          ],
        },
        webcrypto,
      );
      return new Uint8Array(csr.rawData);
    },
    detail: /extension 2\.5\.29\.17 more than once/,
  },
  {
    name: 'fail/version-not-v1',
    make: async () => {
      const der = await makeCsr('ec-p256', { dns: ['a.example.test'] });
      const at = Buffer.from(der).indexOf(Buffer.from([0x02, 0x01, 0x00]));
      der[at + 2] = 1;
      return der;
    },
    detail: /not a valid PKCS#10 request/,
  },
  {
    name: 'fail/ber-indefinite-length-inside',
    make: async () => {
      const der = await makeCsr('ec-p256', { dns: ['a.example.test'] });
      // The subject SEQUENCE (right after the version) re-encoded with an indefinite length.
      const at = Buffer.from(der).indexOf(Buffer.from([0x02, 0x01, 0x00])) + 3;
      der[at + 1] = 0x80;
      return der;
    },
    detail: /not a valid PKCS#10/,
  },
];

for (const c of strictCases) {
  test(c.name, { skip: c.openssl && !hasOpenssl() ? 'openssl is not on PATH' : false }, async () => {
    await rejectsBadCsr(parseCsr(await c.make()), c.detail);
  });
}

test('fail/a-csr-checked-before-then-tampered-is-checked-again', async () => {
  // parseCsr remembers CSRs whose signature verified, by their exact bytes: a changed copy is a new CSR.
  const der = await makeCsr('ec-p256', { dns: ['a.example.test'] });
  assert.deepEqual((await parseCsr(der)).dnsNames, ['a.example.test']);
  assert.deepEqual((await parseCsr(der)).dnsNames, ['a.example.test']);
  const tampered = new Uint8Array(der);
  tampered[tampered.length - 1]! ^= 0x01;
  await rejectsBadCsr(parseCsr(tampered), /signature is invalid/);
  const renamed = new Uint8Array(der);
  renamed[Buffer.from(der).indexOf('a.example.test')] = 'b'.charCodeAt(0);
  await rejectsBadCsr(parseCsr(renamed), /signature is invalid/);
});
