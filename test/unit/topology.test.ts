import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseTopology, TopologyError, loadTopology } from '../../shared/config/index.js';

const BASE = `mesh: t
nodes:
  - {id: gw, role: gateway, dc: core}
  - {id: relay-a, role: relay, dc: west, parent: gw}
  - {id: relay-b, role: relay, dc: west, parent: relay-a}
  - {id: edge-1, role: edge, dc: west, parent: relay-b, acme: {listen: "127.0.0.1:9001"}}
  - {id: edge-2, role: edge, dc: east, parent: gw}
`;

test('ok/chain paths, children, defaults', () => {
  const t = parseTopology(BASE);
  assert.deepEqual(t.pathToGateway('edge-1'), ['edge-1', 'relay-b', 'relay-a', 'gw']);
  assert.deepEqual(t.pathToGateway('edge-2'), ['edge-2', 'gw']);
  assert.deepEqual(t.children('gw').map((n) => n.id), ['relay-a', 'edge-2']);
  assert.equal(t.gateway().id, 'gw');
  assert.equal(t.gateway().cas?.type, 'builtin');
  assert.equal(t.gateway().cas?.maxInFlight, 64);
  assert.deepEqual(t.acme('edge-2').challenges, ['http-01']);
  assert.equal(t.acme('edge-2').listen, '127.0.0.1:8443');
  assert.equal(t.natsUrl('edge-1'), 'nats://127.0.0.1:4222');
  assert.ok(Object.isFrozen(t.config) && Object.isFrozen(t.config.nodes[0]));
});

test('ok/dc nats url and tree', () => {
  const t = parseTopology(BASE.replace('mesh: t', 'mesh: t\nnats: {dcs: {west: "nats://127.0.0.1:5001"}}'));
  assert.equal(t.natsUrl('edge-1'), 'nats://127.0.0.1:5001');
  assert.equal(t.natsUrl('edge-2'), 'nats://127.0.0.1:4222');
  const tree = t.formatTree();
  assert.match(tree, /^gw \(gateway/m);
  assert.match(tree, /└─ edge-1 \(edge, west/);
});

test('ok/example topology validates', () => {
  const t = loadTopology(new URL('../../deploy/topology.example.yaml', import.meta.url).pathname);
  assert.equal(t.edges().length, 2);
  assert.deepEqual(t.pathToGateway('edge-iot-a'), ['edge-iot-a', 'relay-west', 'gw-root']);
});

const failures: Array<[string, string, RegExp, RegExp]> = [
  ['fail/unknown-parent', BASE.replace('parent: relay-b', 'parent: relay-x'), /nodes\[3\]\.parent/, /unknown node "relay-x"/],
  ['fail/edge-parent', BASE.replace('dc: east, parent: gw}', 'dc: east, parent: edge-1}'), /nodes\[4\]\.parent/, /is an edge/],
  ['fail/two-gateways', BASE.replace('role: relay, dc: west, parent: gw', 'role: gateway, dc: west'), /nodes/, /exactly one node must have role gateway/],
  ['fail/gateway-with-parent', BASE.replace('role: gateway, dc: core', 'role: gateway, dc: core, parent: relay-a'), /nodes\[0\]\.parent/, /the gateway has no parent/],
  ['fail/duplicate-id', BASE.replace('id: edge-2', 'id: edge-1'), /nodes\[4\]\.id/, /duplicate node id/],
  ['fail/bad-role', BASE.replace('role: relay, dc: west, parent: gw', 'role: proxy, dc: west, parent: gw'), /nodes\[1\]\.role/, /./],
  ['fail/bad-id', BASE.replace('id: relay-a,', 'id: Relay_A,').replace(/parent: relay-a/g, 'parent: Relay_A'), /nodes\[1\]\.id/, /lower-case/],
  ['fail/acme-on-relay', BASE.replace('role: relay, dc: west, parent: gw}', 'role: relay, dc: west, parent: gw, acme: {}}'), /nodes\[1\]\.acme/, /only edge/],
  ['fail/bad-duration', BASE.replace('dc: core}', 'dc: core, policy: {maxLifetime: "3 days"}}'), /nodes\[0\]\.policy\.maxLifetime/, /duration/],
  ['fail/unknown-field', BASE.replace('dc: core}', 'dc: core, polcy: {}}'), /nodes\[0\]/, /polcy/],
  ['fail/bad-challenge', BASE.replace('listen: "127.0.0.1:9001"', 'listen: "127.0.0.1:9001", challenges: [http-02]'), /nodes\[3\]\.acme\.challenges\[0\]/, /./],
  ['fail/cycle', BASE.replace('{id: relay-a, role: relay, dc: west, parent: gw}', '{id: relay-a, role: relay, dc: west, parent: relay-b}'), /nodes\[1\]\.parent/, /cycle/],
  ['fail/same-listen', BASE.replace('dc: east, parent: gw}', 'dc: east, parent: gw, acme: {listen: "127.0.0.1:9001"}}'), /nodes\[4\]\.acme\.listen/, /already used/],
  ['fail/yaml-syntax', 'mesh: t\nnodes: [\n', /\(root\)/, /./],
  ['fail/no-nodes', 'mesh: t\nnodes: []\n', /nodes/, /./],
  ['fail/cas-max-in-flight-zero', BASE.replace('dc: core}', 'dc: core, cas: {type: builtin, maxInFlight: 0}}'), /nodes\[0\]\.cas\.maxInFlight/, /1/],
  ['fail/cas-max-in-flight-fraction', BASE.replace('dc: core}', 'dc: core, cas: {type: builtin, maxInFlight: 2.5}}'), /nodes\[0\]\.cas\.maxInFlight/, /expected int/],
];

for (const [name, yaml, pathRe, msgRe] of failures) {
  test(name, () => {
    assert.throws(
      () => parseTopology(yaml, 'test.yaml'),
      (e: unknown) => {
        assert.ok(e instanceof TopologyError, `expected TopologyError, got ${String(e)}`);
        const all = e.issues.map((i) => `${i.path || '(root)'}: ${i.message}`).join('\n');
        assert.match(all, pathRe);
        assert.match(all, msgRe);
        return true;
      },
    );
  });
}

test('fail/error names the line of the bad value', () => {
  try {
    parseTopology(BASE.replace('parent: relay-b', 'parent: relay-x'), 'test.yaml');
    assert.fail('should throw');
  } catch (e) {
    assert.ok(e instanceof TopologyError);
    assert.equal(e.issues[0]!.line, 6);
    assert.match(e.message, /test\.yaml/);
  }
});
