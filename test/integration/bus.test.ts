import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { StringCodec, type NatsConnection } from 'nats';
import { parseTopology } from '../../shared/config/index.js';
import { connectBus } from '../../shared/bus/connect.js';
import {
  natsServerSpecs,
  renderNatsConfig,
  startNatsServer,
  waitForLeafLinks,
  type NatsServerSpec,
} from '../../shared/bus/nats-server.js';
import { downSubject, upSubject } from '../../shared/bus/subjects.js';
import { createLogger } from '../../shared/logging/logger.js';
import { startTestBus, topologyNatsYaml, type TestBus } from '../harness/nats.js';
import { freePort, freePorts } from '../harness/ports.js';

const sc = StringCodec();
const quiet = createLogger('bus-test', {}, { level: 'silent' });

/** Publish on `pub` until `sub` (already subscribed to `subject`) receives it, or fail after `timeoutMs`. */
async function deliverAcross(pub: NatsConnection, sub: NatsConnection, subject: string, timeoutMs = 5_000): Promise<number> {
  const token = `m-${Math.random().toString(36).slice(2)}`;
  const s = sub.subscribe(subject);
  await sub.flush();
  const got = (async () => {
    for await (const m of s) if (sc.decode(m.data) === token) return true;
    return false;
  })();
  const t0 = Date.now();
  let received = false;
  void got.then((v) => (received = v));
  try {
    while (!received) {
      if (Date.now() - t0 > timeoutMs) throw new Error(`no message on ${subject} within ${timeoutMs} ms`);
      pub.publish(subject, sc.encode(token));
      await pub.flush();
      await Promise.race([got, sleep(100)]);
    }
    return Date.now() - t0;
  } finally {
    s.unsubscribe();
  }
}

describe('bus: real nats-server hub + leaves', () => {
  let bus: TestBus;
  const conns: NatsConnection[] = [];
  const conn = async (url: string, name: string) => {
    const nc = await connectBus(url, { name, log: quiet });
    conns.push(nc);
    return nc;
  };

  before(async () => {
    const t0 = Date.now();
    bus = await startTestBus({ dcs: ['dc-a', 'dc-b'] });
    console.log(`# test bus (hub + 2 leaves, links up) started in ${Date.now() - t0} ms, dir ${bus.dir}`);
  });

  after(async () => {
    await Promise.all(conns.map((c) => c.close().catch(() => {})));
    await bus?.stop();
  });

  it('ok/leaf-to-leaf: a message published on leaf dc-b reaches a subscriber on leaf dc-a via the hub', async () => {
    const a = await conn(bus.dcs['dc-a']!, 'leaf-a-sub');
    const b = await conn(bus.dcs['dc-b']!, 'leaf-b-pub');
    const ms = await deliverAcross(b, a, downSubject('edge-bus-test'));
    assert.ok(ms < 5_000);
  });

  it('ok/hub-to-leaf request/reply', async () => {
    const leaf = await conn(bus.dcs['dc-a']!, 'leaf-a-responder');
    const hub = await conn(bus.hubUrl, 'hub-requester');
    const subject = upSubject('relay-bus-test', 'child');
    const sub = leaf.subscribe(subject, {
      callback: (_err, m) => m.respond(sc.encode(`pong:${sc.decode(m.data)}`)),
    });
    await leaf.flush();
    try {
      const t0 = Date.now();
      for (;;) {
        try {
          const r = await hub.request(subject, sc.encode('ping'), { timeout: 500 });
          assert.equal(sc.decode(r.data), 'pong:ping');
          break;
        } catch (e) {
          // 503 no responders until the leaf's interest reaches the hub.
          if (Date.now() - t0 > 5_000) throw e;
          await sleep(100);
        }
      }
    } finally {
      sub.unsubscribe();
    }
  });

  it('ok/restart-hub: the leaf links come back and leaf-to-leaf traffic works again', async () => {
    const a = await conn(bus.dcs['dc-a']!, 'leaf-a-restart');
    const b = await conn(bus.dcs['dc-b']!, 'leaf-b-restart');
    const hub = bus.server('hub');
    const oldPid = hub.pid;
    await hub.stop();
    assert.equal(hub.running, false);
    // With the hub gone the leaves lose their link.
    const t0 = Date.now();
    while ((await bus.server('dc-a').leafLinks()) > 0) {
      assert.ok(Date.now() - t0 < 5_000, 'leaf dc-a still reports a link with the hub stopped');
      await sleep(50);
    }
    await hub.restart();
    assert.notEqual(hub.pid, oldPid);
    const t1 = Date.now();
    await waitForLeafLinks(hub, 2, 10_000);
    await waitForLeafLinks(bus.server('dc-a'), 1, 10_000);
    await waitForLeafLinks(bus.server('dc-b'), 1, 10_000);
    const linksMs = Date.now() - t1;
    const ms = await deliverAcross(b, a, downSubject('edge-bus-restart'));
    console.log(`# hub restarted: leaf links back ${linksMs} ms after restart() resolved, leaf-to-leaf delivery then took ${ms} ms`);
  });

  it('ok/jetstream-domain: a stream on leaf dc-a (domain dc-a) acks publishes with the hub down', async () => {
    const a = await conn(bus.dcs['dc-a']!, 'leaf-a-js');
    const subject = upSubject('relay-bus-js', 'child');
    const stream = 'BUS_TEST_DC_A';
    const jsm = await a.jetstreamManager({ domain: 'dc-a' });
    await jsm.streams.add({ name: stream, subjects: [subject] });
    const js = a.jetstream({ domain: 'dc-a' });

    const hub = bus.server('hub');
    await hub.stop();
    try {
      for (let i = 0; i < 5; i++) {
        const ack = await js.publish(subject, sc.encode(`queued-${i}`), { msgID: `env-${i}`, timeout: 2_000 });
        assert.equal(ack.stream, stream);
        assert.equal(ack.domain, 'dc-a');
        assert.equal(ack.seq, i + 1);
      }
      // Dedupe on Nats-Msg-Id, as the outbound queues rely on.
      const dup = await js.publish(subject, sc.encode('queued-0 again'), { msgID: 'env-0', timeout: 2_000 });
      assert.equal(dup.duplicate, true);
      assert.equal((await jsm.streams.info(stream)).state.messages, 5);
    } finally {
      await hub.restart();
      await waitForLeafLinks(hub, 2, 10_000);
    }

    // The stream lives in domain dc-a only: reachable from the hub through that domain's API, absent in the hub's.
    const h = await conn(bus.hubUrl, 'hub-js');
    const hubJsm = await h.jetstreamManager({ domain: 'hub' });
    await assert.rejects(hubJsm.streams.info(stream), /stream not found/i);
    const t0 = Date.now();
    for (;;) {
      try {
        const remote = await h.jetstreamManager({ domain: 'dc-a' });
        assert.equal((await remote.streams.info(stream)).state.messages, 5);
        break;
      } catch (e) {
        if (Date.now() - t0 > 5_000) throw e;
        await sleep(100);
      }
    }
  });

  it('topologyNatsYaml gives the nats block of a topology using this bus', () => {
    const n = topologyNatsYaml(bus);
    assert.equal(n.hub, bus.hubUrl);
    assert.match(n.leafnodeListen, /^127\.0\.0\.1:\d+$/);
    assert.deepEqual(Object.keys(n.dcs), ['dc-a', 'dc-b']);
  });
});

describe('bus: specs and failures', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ra-mesh-bus-test-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('ok/specs-from-topology: hub + one leaf per nats.dcs entry, each its own JetStream domain', () => {
    const topo = parseTopology(
      [
        'mesh: t',
        'stateDir: state',
        'nats:',
        '  hub: nats://127.0.0.1:4322',
        '  leafnodeListen: 127.0.0.1:7522',
        '  dcs: {dc-west: "nats://127.0.0.1:4323", dc-east: "nats://[::1]:4324"}',
        '  auth: none',
        'nodes:',
        '  - {id: gw, role: gateway, dc: dc-core}',
      ].join('\n'),
      't.yaml',
      '/srv/mesh',
    );
    const specs = natsServerSpecs(topo);
    assert.deepEqual(
      specs.map((s) => [s.name, s.role, s.host, s.port, s.jetstream.domain, s.jetstream.storeDir]),
      [
        ['hub', 'hub', '127.0.0.1', 4322, 'hub', '/srv/mesh/state/nats/hub'],
        ['dc-west', 'leaf', '127.0.0.1', 4323, 'dc-west', '/srv/mesh/state/nats/dc-west'],
        ['dc-east', 'leaf', '::1', 4324, 'dc-east', '/srv/mesh/state/nats/dc-east'],
      ],
    );
    assert.deepEqual(specs[0]!.leafnodeListen, { host: '127.0.0.1', port: 7522 });
    assert.equal(specs[1]!.hubLeafUrl, 'nats-leaf://127.0.0.1:7522');
    const leafConf = renderNatsConfig(specs[2]!);
    assert.match(leafConf, /server_name: "t-dc-east"/);
    assert.match(leafConf, /domain: "dc-east"/);
    assert.match(leafConf, /reconnect: 1/);
    assert.match(leafConf, /remotes: \[ \{\n {4}url: "nats-leaf:\/\/127\.0\.0\.1:7522"\n {2}\} \]/);
    assert.match(renderNatsConfig(specs[0]!), /leafnodes \{\n {2}host: "127\.0\.0\.1"\n {2}port: 7522\n\}/);
    assert.doesNotMatch(renderNatsConfig(specs[0]!), /authorization/);
    // nats.auth defaults to nkey: the specs then need the bus credentials.
    const secured = parseTopology('mesh: t\nnodes:\n  - {id: gw, role: gateway, dc: dc-core}\n', 't.yaml', '/srv/mesh');
    assert.throws(() => natsServerSpecs(secured), /pass the bus credentials/);
  });

  it('ok/specs-with-credentials: node users with permissions, leaf logins, TLS files', () => {
    const topo = parseTopology(
      [
        'mesh: t',
        'nats:',
        '  hub: nats://127.0.0.1:4322',
        '  leafnodeListen: 127.0.0.1:7522',
        '  dcs: {dc-west: "nats://127.0.0.1:4323"}',
        '  tls: {ca: tls/ca.pem, cert: tls/server.pem, key: tls/server.key}',
        'nodes:',
        '  - {id: gw, role: gateway, dc: dc-core}',
        '  - {id: edge-w, role: edge, dc: dc-west, parent: gw}',
      ].join('\n'),
      't.yaml',
      '/srv/mesh',
    );
    const creds = {
      users: [
        { node: 'gw', nkey: 'UGW', permissions: { publish: ['ramesh.down.edge-w'], subscribe: ['ramesh.up.gw', '_INBOX.>'] } },
        { node: 'edge-w', nkey: 'UEDGE', permissions: { publish: ['ramesh.up.gw'], subscribe: ['ramesh.down.edge-w', '_INBOX.>'] } },
      ],
      leafLinks: [{ dc: 'dc-west', user: 'leaf-dc-west', password: 'pw-west' }],
    };
    const [hub, leaf] = natsServerSpecs(topo, undefined, creds);
    const hubConf = renderNatsConfig(hub!);
    const leafConf = renderNatsConfig(leaf!);
    for (const conf of [hubConf, leafConf]) {
      assert.match(conf, /\{ nkey: "UEDGE", permissions: \{\n {8}publish: \{ allow: \["ramesh\.up\.gw"\] \},\n {8}subscribe: \{ allow: \["ramesh\.down\.edge-w","_INBOX\.>"\] \} \} \}/);
      assert.match(conf, /^tls \{\n {2}cert_file: "\/srv\/mesh\/tls\/server\.pem"\n {2}key_file: "\/srv\/mesh\/tls\/server\.key"\n {2}ca_file: "\/srv\/mesh\/tls\/ca\.pem"\n\}/m);
    }
    assert.match(hubConf, /authorization \{\n {4}users: \[\n {6}\{ user: "leaf-dc-west", password: "pw-west" \}/);
    assert.match(leafConf, /url: "nats-leaf:\/\/leaf-dc-west:pw-west@127\.0\.0\.1:7522"\n {4}tls \{\n {6}ca_file: "\/srv\/mesh\/tls\/ca\.pem"\n {4}\}/);
  });

  it('fail/bad-binary: a missing nats-server says how to install it', async () => {
    const spec: NatsServerSpec = {
      name: 'hub',
      role: 'hub',
      host: '127.0.0.1',
      port: await freePort(),
      leafnodeListen: { host: '127.0.0.1', port: await freePort() },
      jetstream: { storeDir: join(dir, 'bad-bin'), domain: 'hub' },
    };
    await assert.rejects(startNatsServer(spec, { dir, bin: '/nonexistent' }), /apt-get install nats-server/);
  });

  it('fail/port-in-use: early exit reports the log tail', async () => {
    const [port, lp1, lp2] = await freePorts(3);
    const mk = (name: string, lp: number): NatsServerSpec => ({
      name,
      role: 'hub',
      host: '127.0.0.1',
      port: port!,
      leafnodeListen: { host: '127.0.0.1', port: lp },
      jetstream: { storeDir: join(dir, name), domain: 'hub' },
    });
    const first = await startNatsServer(mk('first', lp1!), { dir });
    try {
      const t0 = Date.now();
      await assert.rejects(startNatsServer(mk('second', lp2!), { dir, readyTimeoutMs: 5_000 }), (e: Error) => {
        assert.match(e.message, /exited before it was ready/);
        assert.match(e.message, /address already in use/);
        return true;
      });
      assert.ok(Date.now() - t0 < 5_000);
      assert.match(await readFile(join(dir, 'second.log'), 'utf8'), /address already in use/);
    } finally {
      await first.stop();
    }
    assert.equal(first.running, false);
  });
});
