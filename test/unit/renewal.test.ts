import assert from 'node:assert/strict';
import { webcrypto } from 'node:crypto';
import { describe, test } from 'node:test';
import { RaError } from '../../shared/errors/index.js';
import { ariCertId, certificateFacts, normalizeSerial, parseAriCertId, readTlv, serialOf, x509 } from '../../shared/pki/index.js';
import { enforceRenewal, PolicyLayer, type RenewalRequest } from '../../shared/policy/index.js';

// The renewal checks every hop makes (shared/policy/renewal.ts) and RFC 9773 certificate identifiers.

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const HOUR = 3_600_000;

async function cert(opts: { serial: string; notAfter: Date; names: string[]; aki?: string }): Promise<Uint8Array> {
  const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const c = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: opts.serial,
    name: `CN=${opts.names[0]}`,
    keys,
    signingAlgorithm: ALG,
    notBefore: new Date(opts.notAfter.getTime() - 24 * HOUR),
    notAfter: opts.notAfter,
    extensions: [
      new x509.SubjectAlternativeNameExtension(opts.names.map((value) => ({ type: (/^[\d.]+$/.test(value) ? 'ip' : 'dns') as 'ip' | 'dns', value }))),
      ...(opts.aki ? [new x509.AuthorityKeyIdentifierExtension(opts.aki)] : []),
    ],
  });
  return new Uint8Array(c.rawData);
}

const b64 = (der: Uint8Array) => Buffer.from(der).toString('base64url');
const renewalOf = (names: string[], der: Uint8Array | null): RenewalRequest => ({
  identifiers: names.map((value) => ({ type: /^[\d.]+$/.test(value) ? 'ip' : 'dns', value, validation: { method: 'renewal' } })),
  renewalOf: der ? b64(der) : null,
});

describe('unit: renewal with the old key, per policy layer', async () => {
  const now = Date.now();
  const expired2h = await cert({ serial: '0a0b', notAfter: new Date(now - 2 * HOUR), names: ['dev.example.test', '10.1.2.3'] });
  const windowed = new PolicyLayer('edge-x', { allowWildcardNames: false, renewAfterExpiry: '3h' });
  const narrow = new PolicyLayer('relay-y', { allowWildcardNames: false, renewAfterExpiry: '1h' });
  const open = new PolicyLayer('gw', { allowWildcardNames: false });

  const cases: Array<[string, PolicyLayer, RenewalRequest, null | { type: string; detail: RegExp }]> = [
    ['ok/no renewal at all', narrow, { identifiers: [{ type: 'dns', value: 'a.example.test', validation: { method: 'http-01' } }], renewalOf: null }, null],
    ['ok/within the layer window', windowed, renewalOf(['dev.example.test'], expired2h), null],
    ['ok/a subset of the names, ip included', windowed, renewalOf(['10.1.2.3'], expired2h), null],
    ['ok/a layer without renewAfterExpiry sets no limit', open, renewalOf(['dev.example.test'], expired2h), null],
    ['fail/outside the layer window', narrow, renewalOf(['dev.example.test'], expired2h), { type: 'unauthorized', detail: /policy layer relay-y: .*more than renewAfterExpiry 1h ago/ }],
    ['fail/renewal validation without a renewed certificate', open, renewalOf(['dev.example.test'], null), { type: 'unauthorized', detail: /no certificate is renewed/ }],
    ['fail/a name the renewed certificate does not hold', windowed, renewalOf(['other.example.test'], expired2h), { type: 'unauthorized', detail: /does not hold them/ }],
    ['fail/renewalOf is not a certificate', windowed, { ...renewalOf(['dev.example.test'], null), renewalOf: 'AAAA' }, { type: 'malformed', detail: /not a DER certificate/ }],
  ];
  for (const [name, layer, req, want] of cases) {
    test(name, () => {
      if (!want) {
        const facts = enforceRenewal(layer, req, now);
        assert.equal(facts === undefined, req.renewalOf === null);
        return;
      }
      assert.throws(() => enforceRenewal(layer, req, now), (e) => e instanceof RaError && e.type === want.type && want.detail.test(e.detail));
    });
  }

  test('ok/the window is inclusive up to notAfter + renewAfterExpiry', () => {
    const notAfter = certificateFacts(expired2h).notAfter;
    narrow.enforceRenewalWindow(notAfter, notAfter.getTime() + HOUR);
    assert.throws(() => narrow.enforceRenewalWindow(notAfter, notAfter.getTime() + HOUR + 1), RaError);
  });
});

describe('unit: RFC 9773 certificate identifiers', () => {
  const aki = '69887d5fa9e1f67dd5b8abd8ac5ae4a84bc57b21';
  const cases: Array<[string, string, string]> = [
    // [name, serial as generated, the serial octets RFC 9773 §4.1 puts in the certID (DER INTEGER contents)]
    ['ok/high bit clear', '1234abcd', '1234abcd'],
    ['ok/high bit set gets the DER 00 octet', '87654321', '0087654321'],
    ['ok/odd length', 'abc', '0abc'],
  ];
  for (const [name, serial, octets] of cases) {
    test(name, async () => {
      const der = await cert({ serial, notAfter: new Date(Date.now() + HOUR), names: ['a.example.test'], aki });
      // The octets as the certificate's DER has them: Certificate > tbsCertificate > [0] version > serialNumber.
      const tbs = readTlv(der, readTlv(der, 0).contentStart);
      const serialTlv = readTlv(der, readTlv(der, tbs.contentStart).end);
      assert.equal(Buffer.from(der.subarray(serialTlv.contentStart, serialTlv.end)).toString('hex'), octets);
      const id = ariCertId(der)!;
      assert.equal(id, `${Buffer.from(aki, 'hex').toString('base64url')}.${Buffer.from(octets, 'hex').toString('base64url')}`);
      assert.deepEqual(parseAriCertId(id), { aki, serial: normalizeSerial(octets) });
      assert.equal(parseAriCertId(id)!.serial, certificateFacts(der).serial);
      assert.equal(serialOf(der), certificateFacts(der).serial, 'the DER walk reads the serial the full parse reads');
    });
  }
  const bad: Array<[string, string]> = [
    ['fail/no dot', 'abc'],
    ['fail/empty part', '.AQID'],
    ['fail/not base64url', 'ab+c.AQID'],
    ['fail/serial longer than 21 octets', `AQID.${Buffer.alloc(22, 1).toString('base64url')}`],
  ];
  for (const [name, id] of bad) test(name, () => assert.equal(parseAriCertId(id), undefined));
  test('fail/no AKI, no certID', async () => assert.equal(ariCertId(await cert({ serial: '01', notAfter: new Date(Date.now() + HOUR), names: ['a.example.test'] })), undefined));
});
