import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { connect, nkeyAuthenticator, nkeys, type NatsConnection } from 'nats';
import { nodeConnectOptions, nodePermissions } from '../../shared/bus/auth.js';
import { startNatsServer, type NatsServerSpec } from '../../shared/bus/nats-server.js';
import { downSubject, upSubject } from '../../shared/bus/subjects.js';
import { startTestMesh, type TestMesh } from '../harness/mesh.js';
import { freePorts } from '../harness/ports.js';
import { makeTestServerTls } from '../harness/tls.js';
import { EnvelopeQueue } from '../../shared/bus/queue.js';
import { createLogger } from '../../shared/logging/logger.js';
import { makeCsr } from '../harness/acme-client.js';
import { KeyRing, loadOrCreateNodeKey, newEdgePayload, signEdgeEnvelope, verifyResult } from '../../shared/envelope/index.js';

// Bus security with real nats-server processes: per-node nkeys with subject permissions generated
// from the topology (nats.auth: nkey, the default) and per-dc passwords on leaf links. What a node may
// not do is refused by nats-server itself.

const enc = new TextEncoder();

/** The permission violations the server reports on a connection, as "<publish|subscription> <subject>". */
function errorsOf(nc: NatsConnection): string[] {
  const out: string[] = [];
  void (async () => {
    for await (const s of nc.status()) {
      const ctx = (s as { permissionContext?: { operation: string; subject: string } }).permissionContext;
      if (s.type === 'error' && s.data === 'PERMISSIONS_VIOLATION' && ctx) out.push(`${ctx.operation} ${ctx.subject}`);
    }
  })().catch(() => undefined);
  return out;
}

async function waitFor(cond: () => boolean, timeoutMs = 5_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('integration: bus credentials and subject permissions', { timeout: 120_000 }, () => {
  let m: TestMesh;
  const conns: NatsConnection[] = [];

  before(async () => {
    m = await startTestMesh({
      nodes: [
        { id: 'gw', role: 'gateway', dc: 'core' },
        { id: 'relay-a', role: 'relay', dc: 'dc-a', parent: 'gw' },
        { id: 'edge-a', role: 'edge', dc: 'dc-a', parent: 'relay-a' },
        { id: 'edge-b', role: 'edge', dc: 'dc-b', parent: 'gw' },
      ],
    });
  });
  after(async () => {
    for (const c of conns) await c.close().catch(() => undefined);
    await m?.stop();
  });

  async function as(node: string, server = m.topology.natsUrl(node)): Promise<NatsConnection> {
    const c = await connect({ servers: server, reconnect: false, ...(await nodeConnectOptions(m.topology, node)) });
    conns.push(c);
    return c;
  }

  test('ok/permissions follow the topology', () => {
    const edge = nodePermissions(m.topology, 'edge-a');
    assert.deepEqual(edge.subscribe, [downSubject('edge-a'), '_INBOX.>']);
    assert.deepEqual(edge.publish, [
      upSubject('relay-a', 'edge-a'),
      '$JS.API.INFO',
      ...['INFO', 'CREATE', 'UPDATE', 'MSG.GET', 'MSG.DELETE'].map((op) => `$JS.API.STREAM.${op}.RAMESH_OUT_edge-a`),
    ]);
    const relay = nodePermissions(m.topology, 'relay-a');
    assert.deepEqual(relay.subscribe, ['_INBOX.>']);
    assert.ok(relay.publish.includes(upSubject('gw', 'relay-a')));
    assert.ok(relay.publish.includes(downSubject('edge-a')));
    assert.ok(relay.publish.includes('$JS.API.CONSUMER.MSG.NEXT.RAMESH_OUT_edge-a.relay-a'), 'same server: local API');
    const gw = nodePermissions(m.topology, 'gw');
    assert.ok(gw.publish.includes('$JS.dc-a.API.CONSUMER.MSG.NEXT.RAMESH_OUT_relay-a.gw'), 'child on a leaf: its domain');
    assert.ok(gw.publish.includes('$JS.dc-b.API.CONSUMER.MSG.NEXT.RAMESH_OUT_edge-b.gw'));
    assert.ok(gw.publish.includes('$JS.ACK.RAMESH_OUT_edge-b.gw.>'));
    assert.deepEqual(gw.publish.filter((p) => p.startsWith('ramesh.')).sort(), [downSubject('edge-a'), downSubject('edge-b')]);
  });

  test('ok/credentials are owner-only files; the server config holds no node secret', async () => {
    const seedFile = join(m.topology.natsCredentialsDir(), 'edge-a.nk');
    assert.equal((await stat(seedFile)).mode & 0o777, 0o600);
    const seed = (await readFile(seedFile, 'utf8')).trim();
    const conf = await readFile(join(m.bus.dir, 'hub.conf'), 'utf8');
    assert.equal((await stat(join(m.bus.dir, 'hub.conf'))).mode & 0o777, 0o600);
    assert.ok(!conf.includes(seed), 'seed not in the server config');
    assert.ok(conf.includes(nkeys.fromSeed(enc.encode(seed)).getPublicKey()), 'public nkey in the server config');
  });

  const refusedConnects: Array<[string, () => Promise<unknown>]> = [
    ['fail/no credentials', () => connect({ servers: m.bus.hubUrl, reconnect: false })],
    ['fail/an nkey the topology does not know', () => connect({ servers: m.bus.hubUrl, reconnect: false, authenticator: nkeyAuthenticator(nkeys.createUser().getSeed()) })],
    ['fail/no credentials on a leaf server', () => connect({ servers: m.bus.dcs['dc-a']!, reconnect: false })],
  ];
  for (const [name, attempt] of refusedConnects) {
    test(name, async () => {
      await assert.rejects(attempt(), (e: Error & { code?: string }) => /AUTHORIZATION_VIOLATION|Authorization Violation/i.test(`${e.code} ${e.message}`));
    });
  }

  // Each is refused by nats-server for edge-a's credentials (the async permission error names it).
  const refusedPublishes: Array<[string, string]> = [
    ['fail/skip its relay and publish for the gateway', upSubject('gw', 'edge-a')],
    ['fail/pose as another child of its relay', upSubject('relay-a', 'edge-b')],
    ['fail/pose as its relay', upSubject('gw', 'relay-a')],
    ['fail/send a result to another edge', downSubject('edge-b')],
    ['fail/delete its own outbound stream', '$JS.API.STREAM.DELETE.RAMESH_OUT_edge-a'],
    ['fail/create another node\'s stream', '$JS.API.STREAM.CREATE.RAMESH_OUT_edge-b'],
    ['fail/read a message of another node\'s stream', '$JS.API.STREAM.MSG.GET.RAMESH_OUT_edge-b'],
    ['fail/delete a message of another node\'s stream', '$JS.API.STREAM.MSG.DELETE.RAMESH_OUT_edge-b'],
    ['fail/read its own queue as its parent', '$JS.API.CONSUMER.MSG.NEXT.RAMESH_OUT_edge-a.relay-a'],
    ['fail/reach another domain\'s JetStream', '$JS.hub.API.INFO'],
  ];
  for (const [name, subject] of refusedPublishes) {
    test(name, async () => {
      const edge = await as('edge-a');
      const errors = errorsOf(edge);
      edge.publish(subject, enc.encode('x'));
      edge.publish(upSubject('relay-a', 'edge-a'), enc.encode('allowed, a control'));
      await edge.flush();
      await waitFor(() => errors.length >= 1);
      await new Promise((r) => setTimeout(r, 200));
      assert.deepEqual(errors, [`publish ${subject}`]);
    });
  }

  const refusedSubs: Array<[string, string]> = [
    ['fail/an edge reading another edge\'s results', downSubject('edge-b')],
    ['fail/an edge reading every result', 'ramesh.down.>'],
    ['fail/an edge reading the envelopes going up', 'ramesh.up.>'],
    ['fail/an edge reading JetStream acks', '$JS.ACK.>'],
  ];
  for (const [name, subject] of refusedSubs) {
    test(name, async () => {
      const edge = await as('edge-a');
      const errors = errorsOf(edge);
      const sub = edge.subscribe(subject);
      const closed = sub.closed;
      await edge.flush();
      await waitFor(() => errors.includes(`subscription ${subject}`));
      await closed.catch(() => undefined);
      assert.equal(sub.isClosed(), true, 'the server closed the subscription');
    });
  }

  test('ok/an edge reads its own results', async () => {
    const edge = await as('edge-a');
    const gw = await as('gw');
    const sub = edge.subscribe(downSubject('edge-a'), { max: 1 });
    await edge.flush();
    await new Promise((r) => setTimeout(r, 300));
    gw.publish(downSubject('edge-a'), enc.encode('result'));
    await gw.flush();
    for await (const msg of sub) assert.equal(new TextDecoder().decode(msg.data), 'result');
  });

  test('fail/a leaf server with a wrong link password gets no link to the hub', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ra-mesh-rogue-leaf-'));
    try {
      const [port] = await freePorts(1, '127.0.0.1');
      const spec: NatsServerSpec = {
        name: 'rogue',
        role: 'leaf',
        host: '127.0.0.1',
        port: port!,
        hubLeafUrl: `nats-leaf://${m.bus.leafnodeListen}`,
        jetstream: { storeDir: join(dir, 'js'), domain: 'rogue' },
        leafLogin: { user: 'leaf-dc-a', password: 'not-the-password' },
      };
      await assert.rejects(startNatsServer(spec, { dir, readyTimeoutMs: 3_000 }), /no leafnode link to the hub/);
      assert.equal(await m.bus.server('hub').leafLinks(), 2, 'the hub still has exactly its two leaves');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('integration: TLS on every NATS client port and leaf link', { timeout: 120_000 }, () => {
  let m: TestMesh;
  let tlsDir: string;

  before(async () => {
    tlsDir = await mkdtemp(join(tmpdir(), 'ra-mesh-nats-tls-'));
    const tls = await makeTestServerTls(tlsDir);
    m = await startTestMesh({
      nats: { tls },
      nodes: [
        { id: 'gw', role: 'gateway', dc: 'core' },
        { id: 'relay-t', role: 'relay', dc: 'dc-a', parent: 'gw' },
        { id: 'edge-t', role: 'edge', dc: 'dc-b', parent: 'relay-t' },
      ],
    });
  });
  after(async () => {
    await m?.stop();
    if (tlsDir) await rm(tlsDir, { recursive: true, force: true });
  });

  test('ok/an envelope crosses both leaf links over TLS and a certificate comes back', async () => {
    const edgeKey = await loadOrCreateNodeKey(m.topology.keysDir(), 'edge-t');
    const edge = await connect({ servers: m.topology.natsUrl('edge-t'), ...(await nodeConnectOptions(m.topology, 'edge-t')) });
    try {
      assert.equal(edge.info?.tls_required, true, 'the server requires TLS');
      const sub = edge.subscribe(downSubject('edge-t'), { max: 1 });
      await edge.flush();
      await new Promise((r) => setTimeout(r, 300));
      const payload = newEdgePayload({
        origin: { node: 'edge-t', dc: 'dc-b' },
        csr: await makeCsr(['tls.example.test']),
        identifiers: [{ type: 'dns', value: 'tls.example.test', validation: { method: 'http-01', at: new Date().toISOString() } }],
        account: { id: 'acct', eab: null, jwkThumbprint: 'thumb' },
        requested: { notBefore: null, notAfter: null },
        renewalOf: null,
        ttlMs: 60_000,
      });
      const q = await EnvelopeQueue.open(edge, m.topology, 'edge-t', { log: createLogger('test') });
      await q.send(await signEdgeEnvelope(payload, edgeKey), payload.id);
      for await (const msg of sub) {
        const jws = new TextDecoder().decode(msg.data);
        const keys = await KeyRing.fromDir(m.topology.keysDir(), m.topology.nodes.map((n) => n.id));
        const r = await verifyResult(jws, { topology: m.topology, edge: 'edge-t', keys });
        assert.equal(r.id, payload.id);
        assert.equal(r.status, 'valid');
      }
    } finally {
      await edge.close();
    }
  });

  test('fail/a client that does not trust the CA cannot connect', async () => {
    const { authenticator } = await nodeConnectOptions(m.topology, 'edge-t');
    await assert.rejects(
      connect({ servers: m.topology.natsUrl('edge-t'), reconnect: false, ...(authenticator ? { authenticator } : {}) }),
      (e: Error) => /certificate/i.test(e.message),
    );
  });
});
