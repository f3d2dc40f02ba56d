import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { FlattenedSign } from 'jose';
import { startTestMesh, type TestMesh } from '../harness/mesh.js';
import { freePort } from '../harness/ports.js';
import { httpGet, opensslVerify, pemCerts, run, sanNames } from '../harness/tools.js';
import { TestAcmeClient } from '../harness/acme-client.js';

// External Account Binding (RFC 8555 §7.3.4) on an edge with eab: required; keys made with
// `ra-mesh eab add` against the running edge (admin socket), used by lego and certbot.

const BIN = fileURLToPath(new URL('../../bin/ra-mesh.js', import.meta.url));

async function cli(...args: string[]): Promise<string> {
  return (await run(process.execPath, [BIN, ...args], { env: { RA_MESH_LOG_LEVEL: 'error' } })).out;
}

async function eabJws(client: TestAcmeClient, keyId: string, hmacKey: string, opts: { alg?: string; url?: string } = {}) {
  return new FlattenedSign(new TextEncoder().encode(JSON.stringify(client.jwk)))
    .setProtectedHeader({ alg: opts.alg ?? 'HS256', kid: keyId, url: opts.url ?? client.dir.newAccount! } as never)
    .sign(Buffer.from(hmacKey, 'base64url'));
}

describe('e2e: external account binding', { timeout: 240_000 }, () => {
  let m: TestMesh;
  let work: string;
  let http01Port: number;
  let ca: string;

  before(async () => {
    http01Port = await freePort();
    work = await mkdtemp(join(tmpdir(), 'ra-mesh-eab-'));
    m = await startTestMesh({
      nodes: [
        { id: 'gw', role: 'gateway', dc: 'core' },
        { id: 'edge-e', role: 'edge', dc: 'dc-a', parent: 'gw', acme: { eab: 'required', http01Port, hosts: { 'e.example.test': '127.0.0.1', 'f.example.test': '127.0.0.1' } } },
      ],
    });
    ca = await readFile(m.edgeTlsCert('edge-e'), 'utf8');
  });
  after(async () => {
    await m?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  async function addKey(label?: string): Promise<{ keyId: string; hmacKey: string }> {
    const out = await cli('eab', 'add', m.topologyFile, '--edge', 'edge-e', '--json', ...(label ? ['--label', label] : []));
    return JSON.parse(out);
  }

  test('ok/directory says externalAccountRequired', async () => {
    const client = await new TestAcmeClient(m.directory('edge-e'), ca).init();
    assert.equal((client.dir as unknown as { meta: { externalAccountRequired: boolean } }).meta.externalAccountRequired, true);
  });

  test('ok/lego with an EAB key made by `ra-mesh eab add` on the running edge', async () => {
    const { keyId, hmacKey } = await addKey('lego device');
    const path = join(work, 'lego');
    await run('lego', ['--server', m.directory('edge-e'), '--email', 'ops@example.test', '--accept-tos', '--path', path, '--eab', '--kid', keyId, '--hmac', hmacKey,
      '--domains', 'e.example.test', '--http', '--http.port', `127.0.0.1:${http01Port}`, 'run'], { env: { LEGO_CA_CERTIFICATES: m.edgeTlsCert('edge-e') } });
    const chain = await readFile(join(path, 'certificates', 'e.example.test.crt'), 'utf8');
    assert.deepEqual(sanNames(pemCerts(chain)[0]!), ['e.example.test']);
    assert.match(await opensslVerify(work, chain, await httpGet(m.rootsUrl())), /OK/);
    const list = JSON.parse(await cli('eab', 'list', m.topologyFile, '--edge', 'edge-e', '--json'));
    const rec = list.find((r: { keyId: string }) => r.keyId === keyId);
    assert.ok(rec.boundTo, 'key is bound to the new account');
    assert.equal(rec.label, 'lego device');
    assert.equal('hmacKey' in rec, false, 'list never shows the MAC key');
  });

  test('ok/certbot with --eab-kid/--eab-hmac-key', async () => {
    const { keyId, hmacKey } = await addKey();
    const d = join(work, 'certbot');
    await run('certbot', ['certonly', '--standalone', '--server', m.directory('edge-e'), '--http-01-port', String(http01Port), '--http-01-address', '127.0.0.1',
      '-d', 'f.example.test', '--eab-kid', keyId, '--eab-hmac-key', hmacKey, '--config-dir', d, '--work-dir', d, '--logs-dir', d,
      '--register-unsafely-without-email', '--agree-tos', '--non-interactive'], { env: { REQUESTS_CA_BUNDLE: m.edgeTlsCert('edge-e') } });
    assert.deepEqual(sanNames(pemCerts(await readFile(join(d, 'live', 'f.example.test', 'fullchain.pem'), 'utf8'))[0]!), ['f.example.test']);
  });

  const refusals: Array<[string, (c: TestAcmeClient) => Promise<unknown>, number, string]> = [
    ['fail/no binding', async () => undefined, 401, 'externalAccountRequired'],
    ['fail/unknown key id', async (c) => eabJws(c, 'no-such-key', Buffer.alloc(32).toString('base64url')), 403, 'unauthorized'],
    ['fail/wrong MAC key', async (c) => eabJws(c, (await addKey()).keyId, Buffer.alloc(32, 7).toString('base64url')), 403, 'unauthorized'],
    ['fail/wrong url', async (c) => { const k = await addKey(); return eabJws(c, k.keyId, k.hmacKey, { url: 'https://elsewhere.test/new-account' }); }, 400, 'malformed'],
    ['fail/alg not a MAC', async (c) => { const k = await addKey(); const j = await eabJws(c, k.keyId, k.hmacKey); return { ...j, protected: Buffer.from(JSON.stringify({ alg: 'ES256', kid: k.keyId, url: c.dir.newAccount })).toString('base64url') }; }, 400, 'badSignatureAlgorithm'],
    ['fail/revoked key', async (c) => { const k = await addKey(); await cli('eab', 'revoke', m.topologyFile, '--edge', 'edge-e', '--key-id', k.keyId); return eabJws(c, k.keyId, k.hmacKey); }, 403, 'unauthorized'],
    ['fail/payload is another key', async (c) => { const k = await addKey(); const other = await new TestAcmeClient(m.directory('edge-e'), ca).init(); return eabJws(other, k.keyId, k.hmacKey, { url: c.dir.newAccount! }); }, 403, 'unauthorized'],
  ];
  for (const [name, make, status, type] of refusals) {
    test(name, async () => {
      const client = await new TestAcmeClient(m.directory('edge-e'), ca).init();
      const eab = await make(client);
      const r = await client.post(client.dir.newAccount!, { termsOfServiceAgreed: true, ...(eab ? { externalAccountBinding: eab } : {}) });
      assert.equal(r.status, status, r.body);
      assert.equal(r.json().type, `urn:ietf:params:acme:error:${type}`);
      // Nothing was created: the key has no account.
      const again = await client.post(client.dir.newAccount!, { onlyReturnExisting: true });
      assert.equal(again.json().type, 'urn:ietf:params:acme:error:accountDoesNotExist');
    });
  }

  test('fail/an EAB key binds once: a second account with the same key is refused', async () => {
    const k = await addKey();
    const first = await new TestAcmeClient(m.directory('edge-e'), ca).init();
    const created = await first.post(first.dir.newAccount!, { termsOfServiceAgreed: true, externalAccountBinding: await eabJws(first, k.keyId, k.hmacKey) });
    assert.equal(created.status, 201);
    const firstId = String(created.headers.location).split('/').pop();
    const second = await new TestAcmeClient(m.directory('edge-e'), ca).init();
    const r = await second.post(second.dir.newAccount!, { termsOfServiceAgreed: true, externalAccountBinding: await eabJws(second, k.keyId, k.hmacKey) });
    assert.equal(r.status, 403);
    assert.match(r.json().detail, /already bound/);
    // The first account is untouched and still the key's owner.
    const list = JSON.parse(await cli('eab', 'list', m.topologyFile, '--edge', 'edge-e', '--json'));
    assert.equal(list.find((x: { keyId: string }) => x.keyId === k.keyId).boundTo, firstId);
  });
});

describe('ra-mesh eab on a stopped edge (direct store access)', () => {
  test('ok/add, list, revoke', async () => {
    const d = await mkdtemp(join(tmpdir(), 'ra-mesh-eab-cli-'));
    try {
      const f = join(d, 't.yaml');
      await writeFile(f, 'mesh: t\nstateDir: state\nnodes:\n  - {id: gw, role: gateway, dc: a}\n  - {id: edge-x, role: edge, dc: a, parent: gw, acme: {eab: required}}\n');
      const added = await cli('eab', 'add', f, '--edge', 'edge-x', '--key-id', 'device-1');
      assert.match(added, /key id: {3}device-1\n {2}HMAC key: [A-Za-z0-9_-]{43}\n/);
      assert.match(await cli('eab', 'list', f, '--edge', 'edge-x'), /^device-1\tunused\t/m);
      await cli('eab', 'revoke', f, '--edge', 'edge-x', '--key-id', 'device-1');
      assert.match(await cli('eab', 'list', f, '--edge', 'edge-x'), /^device-1\trevoked /m);
      const dup = await run(process.execPath, [BIN, 'eab', 'add', f, '--edge', 'edge-x', '--key-id', 'device-1']).then(() => null, (e: { out: string }) => e.out);
      assert.match(dup ?? '', /already exists/);
      const notEdge = await run(process.execPath, [BIN, 'eab', 'list', f, '--edge', 'gw']).then(() => null, (e: { out: string }) => e.out);
      assert.match(notEdge ?? '', /not an edge/);
    } finally {
      await rm(d, { recursive: true, force: true });
    }
  });
});
