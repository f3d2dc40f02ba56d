import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import { FlattenedSign, generateKeyPair } from 'jose';
import type { EdgeService } from '../../services/edge/index.js';
import { httpsFetch, makeCsr, TestAcmeClient, type HttpResponse } from '../harness/acme-client.js';
import { pemCerts } from '../harness/tools.js';
import { startTestMesh, type TestMesh } from '../harness/mesh.js';
import { freePort } from '../harness/ports.js';

// Requests an ACME server must refuse (RFC 8555 §6.2-§6.5, §7.4): each answers an RFC 7807 problem
// document of the right type and status, with a fresh Replay-Nonce, and leaves the edge's store exactly
// as it was (compared entry by entry). Happy paths are proven with real clients in test/e2e.

const PROBLEM = 'urn:ietf:params:acme:error:';
const NAME = 'ready.example.test';

describe('integration: the edge ACME server refuses what RFC 8555 refuses, and changes nothing', { timeout: 120_000 }, () => {
  let m: TestMesh;
  let ca: string;
  let edge: EdgeService;
  let client: TestAcmeClient;
  let readyOrder: { url: string; order: { finalize: string; authorizations: string[] } };

  before(async () => {
    const http01Port = await freePort();
    m = await startTestMesh({
      nodes: [
        { id: 'gw', role: 'gateway', dc: 'core' },
        { id: 'edge', role: 'edge', dc: 'dc-a', parent: 'gw', acme: {
            challenges: ['http-01'],
            http01Port,
            hosts: { [NAME]: '127.0.0.1' },
            termsOfService: 'https://pki.corp.example/tos',
            website: 'https://pki.corp.example/',
            caaIdentities: ['ca.corp.example'],
          },
        },
      ],
    });
    ca = await readFile(m.edgeTlsCert('edge'), 'utf8');
    edge = m.mesh.edges.get('edge')!;
    client = await new TestAcmeClient(m.directory('edge'), ca).init();
    assert.equal((await client.register()).status, 201);
    const responder = await TestAcmeClient.http01Responder(http01Port);
    try {
      readyOrder = await client.readyOrder([NAME], responder);
      assert.equal((readyOrder.order as unknown as { status: string }).status, 'ready');
    } finally {
      await responder.close();
    }
  });
  after(async () => m?.stop());

  const b64 = (s: string) => Buffer.from(s).toString('base64url');

  type Case = [name: string, send: () => Promise<HttpResponse>, status: number, type: string];
  const cases: Case[] = [
    [
      'fail/bad JWS signature',
      async () => {
        const jws = await client.sign(client.dir.newOrder!, { identifiers: [{ type: 'dns', value: 'x.example.test' }] });
        const sig = Buffer.from(jws.signature, 'base64url');
        sig[0] = sig[0]! ^ 0xff;
        return client.postBody(client.dir.newOrder!, JSON.stringify({ ...jws, signature: sig.toString('base64url') }));
      },
      400,
      'malformed',
    ],
    [
      'fail/JWS url is not the request URL (RFC 8555 §6.4)',
      async () => client.post(client.dir.newOrder!, { identifiers: [{ type: 'dns', value: 'x.example.test' }] }, { url: client.dir.newAccount }),
      403,
      'unauthorized',
    ],
    [
      'fail/reused nonce (RFC 8555 §6.5)',
      async () => {
        const jws = await client.sign(client.dir.newOrder!, { identifiers: [{ type: 'dns', value: 'x.example.test' }] });
        const nonce = JSON.parse(Buffer.from(jws.protected, 'base64url').toString()).nonce as string;
        // Use the nonce once (an account POST-as-GET), then send the order with the same nonce.
        const once = await client.post(client.kid!, undefined, { nonce });
        assert.equal(once.status, 200);
        return client.postBody(client.dir.newOrder!, JSON.stringify(jws));
      },
      400,
      'badNonce',
    ],
    [
      'fail/unknown kid (RFC 8555 §6.2)',
      async () => client.post(client.dir.newOrder!, { identifiers: [{ type: 'dns', value: 'x.example.test' }] }, { kid: `${client.kid!.replace(/[^/]+$/, '')}no-such-account` }),
      400,
      'accountDoesNotExist',
    ],
    [
      'fail/alg none (RFC 8555 §6.2)',
      async () => {
        const jws = await client.sign(client.dir.newOrder!, { identifiers: [{ type: 'dns', value: 'x.example.test' }] });
        const header = { ...JSON.parse(Buffer.from(jws.protected, 'base64url').toString()), alg: 'none' };
        return client.postBody(client.dir.newOrder!, JSON.stringify({ protected: b64(JSON.stringify(header)), payload: jws.payload, signature: '' }));
      },
      400,
      'badSignatureAlgorithm',
    ],
    [
      'fail/a MAC algorithm for an account key (RFC 8555 §6.2)',
      async () => {
        const header = { alg: 'HS256', nonce: await client.newNonce(), url: client.dir.newOrder, kid: client.kid };
        const jws = await new FlattenedSign(new TextEncoder().encode(JSON.stringify({ identifiers: [{ type: 'dns', value: 'x.example.test' }] })))
          .setProtectedHeader(header as never)
          .sign(new Uint8Array(32));
        return client.postBody(client.dir.newOrder!, JSON.stringify(jws));
      },
      400,
      'badSignatureAlgorithm',
    ],
    [
      'fail/both jwk and kid (RFC 8555 §6.2)',
      async () => client.post(client.dir.newOrder!, { identifiers: [{ type: 'dns', value: 'x.example.test' }] }, { jwk: client.jwk }),
      400,
      'malformed',
    ],
    [
      'fail/a private key as jwk',
      async () => {
        const kp = await generateKeyPair('ES256', { extractable: true });
        const { exportJWK } = await import('jose');
        return client.post(client.dir.newAccount!, { termsOfServiceAgreed: true }, { kid: undefined, jwk: await exportJWK(kp.privateKey) });
      },
      400,
      'badPublicKey',
    ],
    ['fail/oversized body is 413', async () => client.postBody(client.dir.newOrder!, JSON.stringify({ protected: 'x'.repeat(70 * 1024), payload: '', signature: '' })), 413, 'malformed'],
    ['fail/wrong content type is 415', async () => client.postBody(client.dir.newOrder!, JSON.stringify(await client.sign(client.dir.newOrder!, {})), 'application/json'), 415, 'malformed'],
    ['fail/not a flattened JWS', async () => client.postBody(client.dir.newOrder!, JSON.stringify({ payload: 'e30' })), 400, 'malformed'],
    [
      'fail/CSR with a name that is not in the order (RFC 8555 §7.4)',
      async () => client.post(readyOrder.order.finalize, { csr: await makeCsr([NAME, 'extra.example.test']) }),
      400,
      'badCSR',
    ],
    ['fail/finalize with a CSR that is not DER', async () => client.post(readyOrder.order.finalize, { csr: 'AAAA' }), 400, 'badCSR'],
    [
      'fail/wildcard on an edge without dns-01 (RFC 8555 §7.1.3)',
      async () => client.post(client.dir.newOrder!, { identifiers: [{ type: 'dns', value: '*.example.test' }] }),
      400,
      'rejectedIdentifier',
    ],
    ['fail/an identifier type the edge does not know', async () => client.post(client.dir.newOrder!, { identifiers: [{ type: 'email', value: 'a@example.test' }] }), 400, 'unsupportedIdentifier'],
    ['fail/POST-as-GET with a payload (RFC 8555 §6.3)', async () => client.post(readyOrder.url, {}), 400, 'malformed'],
    [
      'fail/the kid of an account, signed with another key',
      async () => {
        const other = await new TestAcmeClient(m.directory('edge'), ca).init();
        return other.post(readyOrder.url, undefined, { kid: client.kid });
      },
      400,
      'malformed',
    ],
  ];

  for (const [name, send, status, type] of cases) {
    test(name, async () => {
      const before = await edge.storeSnapshot();
      assert.ok([...before.keys()].some((k) => k.startsWith('!order!')), 'the snapshot holds the ready order');
      const r = await send();
      assert.equal(r.status, status, r.body);
      assert.match(String(r.headers['content-type']), /^application\/problem\+json/);
      assert.equal(r.json().type, `${PROBLEM}${type}`, r.body);
      assert.equal(typeof r.json().detail, 'string');
      // RFC 8555 §6.2: badSignatureAlgorithm lists the accepted algorithms.
      if (type === 'badSignatureAlgorithm') {
        const algs = r.json().algorithms as string[];
        assert.ok(Array.isArray(algs) && ['ES256', 'RS256', 'EdDSA'].every((a) => algs.includes(a)), JSON.stringify(algs));
        assert.ok(!algs.includes('none') && !algs.some((a) => a.startsWith('HS')), JSON.stringify(algs));
      }
      // RFC 8555 §6.5: every response, errors included, carries a fresh nonce.
      assert.match(String(r.headers['replay-nonce']), /^[A-Za-z0-9_-]{16,}$/);
      // Nonce bookkeeping aside (every answer hands out one, every checked request uses one up), nothing changed.
      const resources = (m: Map<string, string>) => [...m.entries()].filter(([k]) => !k.startsWith('!nonce!'));
      const after = await edge.storeSnapshot();
      assert.deepEqual(resources(after), resources(before), 'the store is unchanged');
    });
  }

  test('ok/directory meta (RFC 8555 §7.1.1) and renewalInfo (RFC 9773 §3)', async () => {
    const dir = (await httpsFetch(m.directory('edge'), { ca })).json();
    assert.deepEqual(dir.meta, {
      termsOfService: 'https://pki.corp.example/tos',
      website: 'https://pki.corp.example/',
      caaIdentities: ['ca.corp.example'],
      externalAccountRequired: false,
    });
    for (const k of ['newNonce', 'newAccount', 'newOrder', 'revokeCert', 'keyChange', 'renewalInfo']) assert.match(dir[k], /^https:\/\/127\.0\.0\.1:\d+\/acme\//, k);
  });

  test('ok/after every refusal the ready order finalizes; the certificate is the PEM chain, leaf then issuer', async () => {
    const fin = await client.post(readyOrder.order.finalize, { csr: await makeCsr([NAME]) });
    assert.equal(fin.status, 200, fin.body);
    // acme.finalizeWait (default 2s): with the mesh up the answer waits for the certificate, so the
    // client sees "valid" and its certificate URL at once, and no Retry-After (nothing to poll for).
    assert.equal(fin.json().status, 'valid', fin.body);
    assert.match(fin.json().certificate, /\/acme\/cert\//);
    assert.equal(fin.headers['retry-after'], undefined);
    const done = await client.poll(readyOrder.url, (o) => o.status === 'valid' || o.status === 'invalid');
    assert.equal(done.status, 'valid');
    const cert = await client.post(done.certificate, undefined);
    assert.equal(cert.status, 200);
    assert.match(String(cert.headers['content-type']), /^application\/pem-certificate-chain/);
    const chain = pemCerts(cert.body);
    assert.equal(chain.length, 2);
    assert.ok(await chain[0]!.verify({ publicKey: await chain[1]!.publicKey.export() }), 'the leaf is signed by the next certificate');
    // Several Link fields arrive joined with ", " (RFC 9110 §5.3): the index, and no rel="up" (RFC 8555 §7.4.2).
    const links = ([] as string[]).concat(cert.headers.link as string | string[]).flatMap((l) => l.split(/,\s*(?=<)/));
    assert.ok(links.some((l) => /rel="index"/.test(l)), JSON.stringify(links));
    assert.ok(!links.some((l) => /rel="up"/.test(l)), JSON.stringify(links));
  });
});
