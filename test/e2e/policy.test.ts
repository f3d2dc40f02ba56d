import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { parse, stringify } from 'yaml';
import { startTestMesh, type TestMesh } from '../harness/mesh.js';
import { freePort } from '../harness/ports.js';
import { pemCerts, run, sanNames } from '../harness/tools.js';
import { makeCsr, TestAcmeClient } from '../harness/acme-client.js';

// Layered policy through a real mesh with real ACME clients (lego), each hop enforcing its own layer:
// - a relay layer refuses what the edge let through (the edge runs an older topology without the
//   relay's new rule): lego gets rejectedIdentifier with a subproblem naming relay-a and its rule;
// - the relay's rate limit (per identifier): lego gets rateLimited naming relay-a, the invalid order
//   comes with Retry-After, and the edge then refuses that name at newOrder with 429 + Retry-After;
// - an account layer bound to an EAB key (`ra-mesh eab add --allow-dns --max-lifetime`): a name outside
//   it is refused at newOrder, a name inside is issued with the account layer's maxLifetime.

const BIN = fileURLToPath(new URL('../../bin/ra-mesh.js', import.meta.url));
const NAMES = ['r.example.test', 's.example.test', 'y.example.test', 'a1.example.test', 'a2.example.test', 'ok.example.test'];
const hosts = Object.fromEntries(NAMES.map((n) => [n, '127.0.0.1']));

describe('e2e: policy layers through the mesh', { timeout: 300_000 }, () => {
  let m: TestMesh;
  let work: string;
  let http01Port: number;
  let oldEdge: ChildProcess | undefined;
  let oldEdgeOut = '';
  let oldDirectory: string;
  let oldTlsCert: string;

  before(async () => {
    http01Port = await freePort();
    work = await mkdtemp(join(tmpdir(), 'ra-mesh-policy-e2e-'));
    m = await startTestMesh({
      external: ['edge-old'],
      nodes: [
        { id: 'gw', role: 'gateway', dc: 'core', policy: { allow: { dns: ['*.example.test'] }, maxLifetime: '48h' } },
        {
          id: 'relay-a',
          role: 'relay',
          dc: 'dc-a',
          parent: 'gw',
          policy: { deny: { dns: ['x.example.test', 'y.example.test'] }, rateLimits: { identifier: { limit: 1, per: '1h' } } },
        },
        { id: 'edge-a', role: 'edge', dc: 'dc-a', parent: 'relay-a', acme: { http01Port, hosts, eab: 'optional' }, policy: { defaultLifetime: '12h' } },
        { id: 'edge-old', role: 'edge', dc: 'dc-a', parent: 'relay-a', acme: { http01Port, hosts }, policy: { defaultLifetime: '12h' } },
      ],
    });
    // edge-old runs the topology as it was before relay-a got its "y.example.test" rule.
    const doc = parse(await readFile(m.topologyFile, 'utf8'));
    doc.nodes.find((n: { id: string }) => n.id === 'relay-a').policy.deny.dns = ['x.example.test'];
    const oldFile = join(work, 'topology-before.yaml');
    await writeFile(oldFile, stringify(doc));
    oldEdge = spawn(process.execPath, [BIN, 'up', oldFile, '--only', 'edge-old', '--no-nats'], {
      env: { ...process.env, RA_MESH_LOG_LEVEL: 'error' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    oldEdge.stdout!.on('data', (d) => (oldEdgeOut += d));
    oldEdge.stderr!.on('data', (d) => (oldEdgeOut += d));
    const until = Date.now() + 30_000;
    while (!/is up/.test(oldEdgeOut)) {
      if (oldEdge.exitCode !== null) throw new Error(`edge-old exited:\n${oldEdgeOut}`);
      if (Date.now() > until) throw new Error(`edge-old not up within 30 s:\n${oldEdgeOut}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    oldDirectory = `https://${m.topology.acme('edge-old').listen}/acme/directory`;
    oldTlsCert = join(m.topology.storeDir('edge-old'), 'tls-cert.pem');
  });

  after(async () => {
    if (oldEdge && oldEdge.exitCode === null) {
      const exited = new Promise((r) => oldEdge!.once('exit', r));
      oldEdge.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
      if (oldEdge.exitCode === null) oldEdge.kill('SIGKILL');
    }
    await m?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  function lego(server: string, caFile: string, path: string, name: string, extra: string[] = []) {
    return run(
      'lego',
      ['--server', server, '--email', 'ops@example.test', '--accept-tos', '--path', path, ...extra, '--domains', name, '--http', '--http.port', `127.0.0.1:${http01Port}`, 'run'],
      { env: { LEGO_CA_CERTIFICATES: caFile }, timeoutMs: 90_000 },
    );
  }

  /** Runs lego expecting failure; returns its output. lego polls an invalid order until --cert.timeout: 5 s here. */
  async function legoFails(server: string, caFile: string, path: string, name: string, extra: string[] = []): Promise<string> {
    try {
      await lego(server, caFile, path, name, [...extra, '--cert.timeout', '5']);
    } catch (e) {
      return (e as { out: string }).out;
    }
    assert.fail(`lego obtained a certificate for ${name}`);
  }

  const legoError = (out: string) => out.split('\n').find((l) => /acme: error|urn:ietf/.test(l))?.trim().slice(0, 400) ?? '(no error line)';

  test('fail/a name the relay layer refuses (the edge did not know the rule): lego gets rejectedIdentifier naming relay-a and its rule', async (t) => {
    const out = await legoFails(oldDirectory, oldTlsCert, join(work, 'lego-old'), 'y.example.test');
    t.diagnostic(`lego: ${legoError(out)}`);
    assert.match(out, /urn:ietf:params:acme:error:rejectedIdentifier/);
    assert.match(out, /refused by policy layer relay-a: deny\.dns "y\.example\.test"/);
    // The same problem document, as an ACME client sees it on the order (RFC 8555 §7.1.3 "error").
    const ca = await readFile(oldTlsCert, 'utf8');
    const client = await new TestAcmeClient(oldDirectory, ca).init();
    await client.register();
    const responder = await TestAcmeClient.http01Responder(http01Port);
    try {
      const { url, order } = await client.readyOrder(['y.example.test'], responder);
      assert.equal(order.status, 'ready');
      assert.equal((await client.post(order.finalize, { csr: await makeCsr(['y.example.test']) })).status, 200);
      const done = await client.poll(url, (o) => o.status === 'invalid' || o.status === 'valid');
      assert.equal(done.status, 'invalid');
      assert.equal(done.error.type, 'urn:ietf:params:acme:error:rejectedIdentifier');
      assert.deepEqual(done.error.subproblems, [
        { type: 'urn:ietf:params:acme:error:rejectedIdentifier', identifier: { type: 'dns', value: 'y.example.test' }, detail: 'refused by policy layer relay-a: deny.dns "y.example.test"' },
      ]);
    } finally {
      await responder.close();
    }
  });

  test('fail/the relay rate limit per identifier: lego gets rateLimited from relay-a; Retry-After on the order, then 429 at newOrder', async (t) => {
    const edgeCa = m.edgeTlsCert('edge-a');
    await lego(m.directory('edge-a'), edgeCa, join(work, 'lego-r1'), 'r.example.test');
    const out = await legoFails(m.directory('edge-a'), edgeCa, join(work, 'lego-r2'), 'r.example.test');
    t.diagnostic(`lego: ${legoError(out)}`);
    assert.match(out, /urn:ietf:params:acme:error:rateLimited/);
    assert.match(out, /policy layer relay-a: rateLimits\.identifier \(1 per 1h\) reached for r\.example\.test/);

    // A second name, with the test client: its order turns invalid with Retry-After from the relay.
    const client = await new TestAcmeClient(m.directory('edge-a'), await readFile(edgeCa, 'utf8')).init();
    await client.register();
    const responder = await TestAcmeClient.http01Responder(http01Port);
    try {
      const first = await client.readyOrder(['s.example.test'], responder);
      await client.post(first.order.finalize, { csr: await makeCsr(['s.example.test']) });
      assert.equal((await client.poll(first.url, (o) => o.status === 'valid' || o.status === 'invalid')).status, 'valid');
      const second = await client.readyOrder(['s.example.test'], responder);
      await client.post(second.order.finalize, { csr: await makeCsr(['s.example.test']) });
      await client.poll(second.url, (o) => o.status === 'invalid' || o.status === 'valid');
      const r = await client.post(second.url, undefined);
      assert.equal(r.json().status, 'invalid');
      assert.equal(r.json().error.type, 'urn:ietf:params:acme:error:rateLimited');
      assert.equal(r.json().error.status, 429);
      const retry = Number(r.headers['retry-after']);
      assert.ok(retry > 3000 && retry <= 3600, `Retry-After ${r.headers['retry-after']}`);
      // The edge now refuses s.example.test at once (429, RFC 8555 §6.7), until the relay's bucket refills.
      const early = await client.post(client.dir.newOrder!, { identifiers: [{ type: 'dns', value: 's.example.test' }] });
      assert.equal(early.status, 429);
      assert.equal(early.json().type, 'urn:ietf:params:acme:error:rateLimited');
      assert.match(early.json().detail, /policy layer relay-a refused a request for s\.example\.test by rateLimits\.identifier/);
      assert.ok(Number(early.headers['retry-after']) > 3000, `Retry-After ${early.headers['retry-after']}`);
      // Other names are not affected.
      assert.equal((await client.post(client.dir.newOrder!, { identifiers: [{ type: 'dns', value: 'ok.example.test' }] })).status, 201);
    } finally {
      await responder.close();
    }
  });

  test('ok/the account layer of an EAB key: a name outside it is refused at newOrder; one inside gets its maxLifetime', async (t) => {
    const added = await run(process.execPath, [BIN, 'eab', 'add', m.topologyFile, '--edge', 'edge-a', '--key-id', 'team-a', '--allow-dns', 'a1.example.test', '--max-lifetime', '6h', '--json'], {
      env: { RA_MESH_LOG_LEVEL: 'error' },
    });
    const key = JSON.parse(added.out) as { keyId: string; hmacKey: string; policy: Record<string, unknown> };
    assert.deepEqual(key.policy.allow, { dns: ['a1.example.test'] });
    const path = join(work, 'lego-team-a');
    const eab = ['--eab', '--kid', key.keyId, '--hmac', key.hmacKey];
    const out = await legoFails(m.directory('edge-a'), m.edgeTlsCert('edge-a'), path, 'a2.example.test', eab);
    t.diagnostic(`lego: ${legoError(out)}`);
    assert.match(out, /urn:ietf:params:acme:error:rejectedIdentifier/);
    assert.match(out, /refused by policy layer account:team-a: allow\.dns \(no rule matches\)/);
    // Same lego account (bound to the key): the allowed name is issued, 6h from the account layer
    // (the edge's defaultLifetime is 12h; the account layer's lifetime travels in the envelope to the gateway).
    await lego(m.directory('edge-a'), m.edgeTlsCert('edge-a'), path, 'a1.example.test', eab);
    const leaf = pemCerts(await readFile(join(path, 'certificates', 'a1.example.test.crt'), 'utf8'))[0]!;
    assert.deepEqual(sanNames(leaf), ['a1.example.test']);
    const hours = (leaf.notAfter.getTime() - leaf.notBefore.getTime()) / 3_600_000;
    assert.ok(hours > 5.9 && hours < 6.1, `lifetime ${hours}h`);
  });
});
