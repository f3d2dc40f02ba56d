import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { parseTopology, TopologyError } from '../../shared/config/index.js';
import { enforceValidationMethods } from '../../shared/envelope/validation-methods.js';
import { RaError } from '../../shared/errors/index.js';
import {
  CmsError,
  decryptEnveloped,
  degenerateCertificates,
  encryptEnveloped,
  octetString,
  parseSignedMessage,
  printableString,
  readOctets,
  readString,
  signedDataCertificates,
  signMessage,
} from '../../services/edge/scep/cms.js';
import { certRep, MESSAGE_TYPE, parsePkiRequest, PkiRequestError, SCEP_OID } from '../../services/edge/scep/messages.js';
import { challengePassword } from '../../services/edge/scep/scep-service.js';
import { transactionKey } from '../../services/edge/scep/scep-store.js';
import { TestScepDevice, type DeviceIdentity } from '../harness/scep-device.js';

// The CMS and SCEP message layer of the edge (services/edge/scep/cms.ts, messages.ts) with real RSA
// keys: round trips, and every refusal a device can cause, with the failInfo it maps to.

const ids: DeviceIdentity[] = [];
async function identity(): Promise<DeviceIdentity> {
  const id = await TestScepDevice.newIdentity(`unit ${ids.length}`);
  ids.push(id);
  return id;
}

function refusal(fn: () => unknown, failInfo: string, message: RegExp): void {
  assert.throws(fn, (e: unknown) => e instanceof CmsError && e.failInfo === failInfo && message.test(e.message));
}

describe('unit: CMS for SCEP', () => {
  test('ok/SignedData round trip: content, signed attributes, signer', async () => {
    const a = await identity();
    const content = randomBytes(100);
    const der = signMessage({ content, attributes: [[SCEP_OID.transactionID, printableString('t-1')], [SCEP_OID.senderNonce, octetString(Buffer.alloc(16, 7))]], signerCert: a.cert, signerKey: a.key });
    const msg = parseSignedMessage(der, { allowSha1: false });
    assert.ok(Buffer.from(msg.content!).equals(content));
    assert.equal(readString(msg.attributes.get(SCEP_OID.transactionID)![0]!), 't-1');
    assert.ok(Buffer.from(readOctets(msg.attributes.get(SCEP_OID.senderNonce)![0]!)).equals(Buffer.alloc(16, 7)));
    assert.ok(Buffer.from(msg.signer.der).equals(Buffer.from(a.cert)));
    assert.equal(msg.digest, 'sha256');
  });

  test('fail/SignedData refusals map to failInfo', async () => {
    const a = await identity();
    const good = signMessage({ content: Buffer.from('payload'), attributes: [], signerCert: a.cert, signerKey: a.key });
    const flip = (i: number) => {
      const c = good.slice();
      c[i]! ^= 0x01;
      return c;
    };
    const at = Buffer.from(good).indexOf(Buffer.from('payload'));
    const cases: Array<[string, Uint8Array, string, RegExp]> = [
      ['fail/content changed after signing', flip(at), 'badMessageCheck', /messageDigest/],
      ['fail/signature changed', flip(good.length - 3), 'badMessageCheck', /signature does not verify/],
      ['fail/not CMS', randomBytes(40), 'badRequest', /does not parse|not DER/],
      ['fail/EnvelopedData instead of SignedData', encryptEnveloped(Buffer.from('x'), a.cert), 'badRequest', /content type/],
      ['fail/signer certificate missing', signMessage({ content: Buffer.from('p'), attributes: [], signerCert: a.cert, signerKey: a.key, certificates: [] }), 'badRequest', /certificate of the signer is not in/],
    ];
    for (const [name, der, failInfo, message] of cases) {
      assert.throws(() => parseSignedMessage(der, { allowSha1: false }), (e: unknown) => e instanceof CmsError && e.failInfo === failInfo && message.test(e.message), name);
    }
  });

  test('ok/EnvelopedData round trip with AES-128/192/256 and triple DES', async () => {
    const a = await identity();
    for (const cipher of ['aes-128-cbc', 'aes-192-cbc', 'aes-256-cbc', 'des-ede3-cbc'] as const) {
      const plain = randomBytes(333);
      const out = decryptEnveloped(encryptEnveloped(plain, a.cert, cipher), [{ cert: a.cert, key: a.key }], { allowDes: false });
      assert.ok(Buffer.from(out.plaintext).equals(plain), cipher);
      assert.equal(out.cipher, cipher);
    }
  });

  test('fail/EnvelopedData for another recipient, or with a forged key block (no padding oracle: same answer)', async () => {
    const a = await identity();
    const b = await identity();
    refusal(() => decryptEnveloped(encryptEnveloped(Buffer.from('x'), b.cert), [{ cert: a.cert, key: a.key }], { allowDes: false }), 'badMessageCheck', /not encrypted for this RA/);
    const secret = Buffer.from('secret'.repeat(20));
    const env = encryptEnveloped(secret, a.cert);
    // The encrypted key is the 256-byte RSA block: flip a byte in it.
    const keyAt = Buffer.from(env).indexOf(Buffer.from([0x04, 0x82, 0x01, 0x00])) + 4;
    assert.ok(keyAt > 4);
    const forged = env.slice();
    forged[keyAt + 10]! ^= 0xff;
    // A random key then fails the content padding (or, 1 time in ~256, yields garbage): never the secret.
    let out: Uint8Array | undefined;
    try {
      out = decryptEnveloped(forged, [{ cert: a.cert, key: a.key }], { allowDes: false }).plaintext;
    } catch (e) {
      assert.ok(e instanceof CmsError && e.failInfo === 'badMessageCheck' && /does not decrypt/.test(e.message), String(e));
    }
    if (out) assert.ok(!Buffer.from(out).equals(secret));
  });

  test('ok/degenerate certificates-only SignedData keeps the order', async () => {
    const certs = [(await identity()).cert, (await identity()).cert];
    const back = signedDataCertificates(degenerateCertificates(certs));
    assert.equal(back.length, 2);
    back.forEach((c, i) => assert.ok(Buffer.from(c).equals(Buffer.from(certs[i]!))));
  });
});

describe('unit: SCEP messages', () => {
  test('ok/a PKCSReq parses, decrypts, and its challengePassword is read', async () => {
    const ra = await identity();
    const dev = await identity();
    const csr = await TestScepDevice.csr(dev, { cn: 'd.example.test', challenge: 'pw 1' });
    const der = signMessage({
      content: encryptEnveloped(csr, ra.cert),
      attributes: [
        [SCEP_OID.transactionID, printableString('tx-1')],
        [SCEP_OID.messageType, printableString(MESSAGE_TYPE.PKCSReq)],
        [SCEP_OID.senderNonce, octetString(Buffer.alloc(16, 1))],
      ],
      signerCert: dev.cert,
      signerKey: dev.key,
    });
    const req = parsePkiRequest(der, [{ cert: ra.cert, key: ra.key }], { legacyCrypto: false });
    assert.equal(req.messageType, MESSAGE_TYPE.PKCSReq);
    assert.equal(req.transactionId, 'tx-1');
    assert.ok(Buffer.from(req.messageData).equals(Buffer.from(csr)));
    assert.equal(challengePassword(req.messageData), 'pw 1');
    assert.equal(challengePassword(await TestScepDevice.csr(dev, { cn: 'd.example.test' })), undefined);
  });

  test('fail/request refusals: missing attributes are malformed; an envelope that does not decrypt is answerable', async () => {
    const ra = await identity();
    const dev = await identity();
    const base = (attrs: Array<[string, Uint8Array]>, content = encryptEnveloped(Buffer.from('x'), ra.cert)) => signMessage({ content, attributes: attrs, signerCert: dev.cert, signerKey: dev.key });
    const tid: [string, Uint8Array] = [SCEP_OID.transactionID, printableString('tx')];
    const type: [string, Uint8Array] = [SCEP_OID.messageType, printableString(MESSAGE_TYPE.PKCSReq)];
    const nonce: [string, Uint8Array] = [SCEP_OID.senderNonce, octetString(Buffer.alloc(16))];
    const recipients = [{ cert: ra.cert, key: ra.key }];
    refusal(() => parsePkiRequest(base([type, nonce]), recipients, { legacyCrypto: false }), 'badRequest', /transactionID/);
    refusal(() => parsePkiRequest(base([tid, nonce]), recipients, { legacyCrypto: false }), 'badRequest', /messageType/);
    refusal(() => parsePkiRequest(base([tid, type, [SCEP_OID.messageType, printableString('99')]]), recipients, { legacyCrypto: false }), 'badRequest', /./);
    refusal(() => parsePkiRequest(base([tid, type, nonce], encryptEnveloped(Buffer.from('x'), dev.cert)), recipients, { legacyCrypto: false }), 'badMessageCheck', /not encrypted for this RA/);
    assert.throws(() => parsePkiRequest(base([tid, type, nonce], encryptEnveloped(Buffer.from('x'), dev.cert)), recipients, { legacyCrypto: false }), (e: unknown) => e instanceof PkiRequestError && e.context.transactionId === 'tx');
  });

  test('ok/CertRep SUCCESS, PENDING and FAILURE (RFC 8894 §3.3.2)', async () => {
    const ra = await identity();
    const dev = await identity();
    const base = { transactionId: 'tx-9', recipientNonce: Buffer.alloc(16, 9), ra: { cert: ra.cert, key: ra.key } };
    const ok = parseSignedMessage(certRep({ ...base, status: 'SUCCESS', certificates: [dev.cert, ra.cert], recipient: dev.cert, cipher: 'des-cbc' }), { allowSha1: false });
    assert.equal(readString(ok.attributes.get(SCEP_OID.pkiStatus)![0]!), '0');
    assert.ok(Buffer.from(readOctets(ok.attributes.get(SCEP_OID.recipientNonce)![0]!)).equals(Buffer.alloc(16, 9)));
    const inner = decryptEnveloped(ok.content!, [{ cert: dev.cert, key: dev.key }], { allowDes: false });
    assert.equal(inner.cipher, 'aes-128-cbc', 'a single-DES client is answered with AES-128, never DES');
    assert.ok(Buffer.from(signedDataCertificates(inner.plaintext)[0]!).equals(Buffer.from(dev.cert)), 'the issued certificate first');
    const pending = parseSignedMessage(certRep({ ...base, status: 'PENDING' }), { allowSha1: false });
    assert.equal(readString(pending.attributes.get(SCEP_OID.pkiStatus)![0]!), '3');
    assert.equal(pending.content, undefined);
    const failed = parseSignedMessage(certRep({ ...base, status: 'FAILURE', failInfo: 'badCertId', failText: 'no such certificate' }), { allowSha1: false });
    assert.equal(readString(failed.attributes.get(SCEP_OID.failInfo)![0]!), '4');
    assert.equal(readString(failed.attributes.get(SCEP_OID.failInfoText)![0]!), 'no such certificate');
  });

  test('ok/a transaction is its transactionID and its signer', async () => {
    const a = await identity();
    const b = await identity();
    assert.equal(transactionKey('t', a.cert), transactionKey('t', a.cert));
    assert.notEqual(transactionKey('t', a.cert), transactionKey('t', b.cert));
    assert.notEqual(transactionKey('t', a.cert), transactionKey('u', a.cert));
  });
});

describe('unit: SCEP in the topology and the envelope', () => {
  const TOPO = `mesh: t
nodes:
  - {id: gw, role: gateway, dc: core}
  - {id: relay, role: relay, dc: west, parent: gw}
  - {id: edge-s, role: edge, dc: west, parent: relay, scep: {raName: ra.iot.example.test, listen: "127.0.0.1:9089"}}
  - {id: edge-p, role: edge, dc: west, parent: relay, acme: {listen: "127.0.0.1:9002"}}
`;

  test('ok/scep block defaults', () => {
    const s = parseTopology(TOPO).node('edge-s').scep!;
    assert.equal(s.oneTimePasswords, true);
    assert.equal(s.legacyCrypto, false);
    assert.equal(s.resultWait, '2s');
    assert.equal(s.raLifetime, '30d');
  });

  const bad: Array<[string, string, RegExp]> = [
    ['fail/scep on a relay', TOPO.replace('{id: relay, role: relay, dc: west, parent: gw}', '{id: relay, role: relay, dc: west, parent: gw, scep: {raName: r.example.test}}'), /nodes\[1\]\.scep.*only edge nodes serve SCEP/s],
    ['fail/raName not a DNS name', TOPO.replace('raName: ra.iot.example.test', 'raName: "RA Cert"'), /nodes\[2\]\.scep\.raName/],
    ['fail/unknown member', TOPO.replace('raName: ra.iot.example.test', 'raName: ra.iot.example.test, challenge: x'), /nodes\[2\]\.scep/],
  ];
  for (const [name, yaml, message] of bad) {
    test(name, () => assert.throws(() => parseTopology(yaml), (e: unknown) => e instanceof TopologyError && message.test(e.message)));
  }

  test('ok+fail/SCEP validation methods only from SCEP edges, under the SCEP accounts, scep-ra for raName only', () => {
    const t = parseTopology(TOPO);
    const at = new Date().toISOString();
    const p = (node: string, method: 'scep-challenge' | 'scep-ra' | 'http-01', value: string, account: string) => ({
      origin: { node, dc: 'west' },
      identifiers: [{ type: 'dns' as const, value, validation: { method, at } }],
      account: { id: account, eab: null, jwkThumbprint: 'x' },
      renewalOf: null,
    });
    const cases: Array<[string, ReturnType<typeof p>, RegExp | undefined]> = [
      ['ok/scep-challenge from a SCEP edge', p('edge-s', 'scep-challenge', 'd.example.test', 'scep:edge-s'), undefined],
      ['ok/scep-ra for raName', p('edge-s', 'scep-ra', 'ra.iot.example.test', 'scep-ra:edge-s'), undefined],
      ['ok/ACME methods are not affected', p('edge-p', 'http-01', 'd.example.test', 'acct'), undefined],
      ['fail/scep-challenge from an edge without scep', p('edge-p', 'scep-challenge', 'd.example.test', 'scep:edge-p'), /does not serve SCEP/],
      ['fail/scep-challenge under an ACME account', p('edge-s', 'scep-challenge', 'd.example.test', 'acct'), /must come from account scep:edge-s/],
      ['fail/scep-ra for another name', p('edge-s', 'scep-ra', 'www.example.test', 'scep-ra:edge-s'), /may name only its scep\.raName/],
      ['fail/scep-ra under the devices\' account', p('edge-s', 'scep-ra', 'ra.iot.example.test', 'scep:edge-s'), /must come from account scep-ra:edge-s/],
    ];
    for (const [name, payload, err] of cases) {
      if (!err) assert.doesNotThrow(() => enforceValidationMethods(t, payload), name);
      else assert.throws(() => enforceValidationMethods(t, payload), (e: unknown) => e instanceof RaError && e.type === 'unauthorized' && err.test(e.detail), name);
    }
  });
});
