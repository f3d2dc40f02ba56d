// ra-mesh compose: the committed docker-compose.yml and its compose-flavoured topology are what the generator
// makes from deploy/topology.example.yaml; the layout keeps every edge on its own segment network (the isolated
// one internal); docker-compose itself accepts the file; the secrets follow the source's keys through a rotation.

import assert from 'node:assert/strict';
import { lstat, mkdtemp, readdir, readFile, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parse, stringify } from 'yaml';
import { loadTopology } from '../../shared/config/index.js';
import { rotatePromote, rotateRetire, rotateStart } from '../../shared/envelope/index.js';
import { CONTAINER, planCompose, writeComposeSecrets } from '../../services/cli/commands/compose.js';
import { run } from '../harness/tools.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const EXAMPLE = join(ROOT, 'deploy', 'topology.example.yaml');
const COMPOSE = join(ROOT, 'docker-compose.yml');
const BIN = join(ROOT, 'bin', 'ra-mesh.js');

interface ComposeFile {
  services: Record<string, { networks: string[]; volumes?: string[]; secrets?: Array<string | { source: string; target: string }>; healthcheck?: { test: string[] }; ports?: string[]; depends_on?: Record<string, unknown>; command: string[] }>;
  networks: Record<string, { internal?: boolean }>;
  volumes: Record<string, unknown>;
  secrets: Record<string, { file: string }>;
}

const example = () => planCompose(loadTopology(EXAMPLE), { composeFile: COMPOSE });
const secretNames = (s: ComposeFile['services'][string]) => (s.secrets ?? []).map((x) => (typeof x === 'string' ? x : x.source)).sort();

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});
async function tmp(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'ra-mesh-compose-'));
  dirs.push(d);
  return d;
}

const BASE = {
  mesh: 't',
  stateDir: 'state',
  nats: { hub: 'nats://127.0.0.1:4222', dcs: { 'dc-a': 'nats://127.0.0.1:4223' } },
  segments: { 'seg-a': { isolated: true } },
  nodes: [
    { id: 'gw', role: 'gateway', dc: 'core' },
    { id: 'relay', role: 'relay', dc: 'dc-a', parent: 'gw' },
    { id: 'edge', role: 'edge', dc: 'dc-a', segment: 'seg-a', parent: 'relay', acme: { listen: '127.0.0.1:8443', hosts: { 'a.example.test': '127.0.0.1', 'b.example.test': '10.9.0.7' } } },
  ],
};

async function topologyFile(t: unknown): Promise<string> {
  const d = await tmp();
  const f = join(d, 'topology.yaml');
  await writeFile(f, stringify(t));
  return f;
}

describe('ra-mesh compose: the committed deployment', () => {
  test('ok/docker-compose.yml and deploy/compose/topology.example.yaml are generated from deploy/topology.example.yaml', async () => {
    const plan = example();
    assert.equal(plan.topologyFile, join(ROOT, 'deploy', 'compose', 'topology.example.yaml'));
    assert.equal(await readFile(COMPOSE, 'utf8'), plan.composeText, 'docker-compose.yml is stale: run `npx ra-mesh compose deploy/topology.example.yaml --out docker-compose.yml`');
    assert.equal(await readFile(plan.topologyFile, 'utf8'), plan.topologyText, `${plan.topologyFile} is stale: run ra-mesh compose`);
  });

  test('ok/ra-mesh compose --check agrees; fail/--check on a changed topology names the stale files', async () => {
    const ok = await run(process.execPath, [BIN, 'compose', EXAMPLE, '--out', COMPOSE, '--check'], { cwd: ROOT });
    assert.match(ok.out, /up to date/);
    const d = await tmp();
    const changed = (await readFile(EXAMPLE, 'utf8')).replace('http01Port: 5002', 'http01Port: 5012').replace('stateDir: ../.ra-mesh/example', 'stateDir: state');
    await writeFile(join(d, 'topology.example.yaml'), changed);
    await writeFile(join(d, 'docker-compose.yml'), await readFile(COMPOSE, 'utf8'));
    const err = await run(process.execPath, [BIN, 'compose', join(d, 'topology.example.yaml'), '--out', join(d, 'docker-compose.yml'), '--check']).then(
      () => null,
      (e: { code: number; out: string }) => e,
    );
    assert.ok(err, '--check must fail');
    assert.equal(err.code, 1);
    assert.match(err.out, /out of date/);
    assert.ok(err.out.includes(join(d, 'docker-compose.yml')), err.out);
  });

  test('ok/docker-compose config accepts the committed file', async () => {
    // The test command installs docker-compose (test/run-all.sh); a missing one fails here, loudly.
    const r = await run('docker-compose', ['-f', COMPOSE, '--project-directory', ROOT, 'config', '-q'], { timeoutMs: 60_000 });
    assert.equal(r.code, 0);
    const services = (await run('docker-compose', ['-f', COMPOSE, 'config', '--services'], { timeoutMs: 60_000 })).out.trim().split('\n').sort();
    assert.deepEqual(services, ['edge-east', 'edge-iot-a', 'gw-root', 'nats-dc-east', 'nats-dc-west', 'nats-hub', 'relay-west']);
  });

  test('ok/the compose-flavoured topology names compose services and container paths', () => {
    const d = example().derived;
    assert.equal(d.keysDir(), CONTAINER.keysDir);
    assert.equal(d.natsCredentialsDir(), CONTAINER.credentialsDir);
    assert.equal(d.storeDir('edge-iot-a'), `${CONTAINER.stateDir}/nodes/edge-iot-a`);
    assert.equal(d.natsUrl('gw-root'), 'nats://nats-hub:4222');
    assert.equal(d.natsUrl('relay-west'), 'nats://nats-dc-west:4222');
    assert.equal(d.natsUrl('edge-iot-a'), 'nats://nats-dc-west:4222');
    assert.equal(d.natsUrl('edge-east'), 'nats://nats-dc-east:4222');
    assert.equal(d.acme('edge-iot-a').listen, '0.0.0.0:8443');
    assert.equal(d.acme('edge-iot-a').externalUrl, 'https://edge-iot-a:8443');
    // A loopback override means the edge's own container: the name resolves through the segment's DNS instead.
    assert.equal(d.acme('edge-iot-a').hosts, undefined);
    assert.equal(d.node('gw-root').http, '0.0.0.0:8080');
    assert.equal(d.node('relay-west').metrics, '0.0.0.0:9464');
  });
});

describe('ra-mesh compose: networks (an edge reaches only its segment and its leaf NATS)', () => {
  const c = parse(example().composeText) as ComposeFile;
  const members = (net: string) => Object.entries(c.services).filter(([, s]) => s.networks.includes(net)).map(([n]) => n).sort();
  const cases: Array<{ name: string; check: () => void }> = [
    {
      name: 'ok/every network a service joins is defined (docker-compose config does not check this)',
      check: () => {
        for (const [svc, s] of Object.entries(c.services)) for (const n of s.networks) assert.ok(c.networks[n], `${svc}: network ${n} undefined`);
      },
    },
    { name: 'ok/the isolated IoT segment is an internal network', check: () => assert.equal(c.networks['seg-iot-a']?.internal, true) },
    { name: 'ok/the office segment has a route out (not internal)', check: () => assert.notEqual(c.networks['seg-office-east']?.internal, true) },
    { name: 'ok/edge-iot-a is on its segment network only', check: () => assert.deepEqual(c.services['edge-iot-a']!.networks, ['seg-iot-a']) },
    { name: 'ok/edge-east is on its segment network only', check: () => assert.deepEqual(c.services['edge-east']!.networks, ['seg-office-east']) },
    { name: 'ok/the IoT segment network holds edge-iot-a and its leaf NATS, nothing else', check: () => assert.deepEqual(members('seg-iot-a'), ['edge-iot-a', 'nats-dc-west']) },
    { name: 'ok/the office segment network holds edge-east and its leaf NATS, nothing else', check: () => assert.deepEqual(members('seg-office-east'), ['edge-east', 'nats-dc-east']) },
    { name: 'ok/the core network joins the hub, the leaves and the gateway', check: () => assert.deepEqual(members('core'), ['gw-root', 'nats-dc-east', 'nats-dc-west', 'nats-hub']) },
    { name: 'ok/the relay shares a network only with its leaf NATS', check: () => assert.deepEqual(members('dc-west'), ['nats-dc-west', 'relay-west']) },
    { name: 'fail/no port of the isolated edge is published on the docker host', check: () => assert.equal(c.services['edge-iot-a']!.ports, undefined) },
    { name: 'ok/the routed edge publishes its ACME port; the gateway only on the host loopback', check: () => {
      assert.deepEqual(c.services['edge-east']!.ports, ['9443:9443']);
      assert.deepEqual(c.services['gw-root']!.ports, ['127.0.0.1:8080:8080']);
    } },
  ];
  for (const k of cases) test(k.name, k.check);
});

describe('ra-mesh compose: volumes, health checks, secrets', () => {
  const c = parse(example().composeText) as ComposeFile;
  const nodes = ['gw-root', 'relay-west', 'edge-iot-a', 'edge-east'];
  test('ok/every node and NATS server keeps its store on a named volume', () => {
    for (const n of nodes) assert.ok(c.services[n]!.volumes!.includes(`store-${n}:${CONTAINER.stateDir}/nodes/${n}`), n);
    for (const [svc, name] of [['nats-hub', 'hub'], ['nats-dc-west', 'dc-west'], ['nats-dc-east', 'dc-east']] as const) {
      assert.ok(c.services[svc]!.volumes!.includes(`${svc}-data:${CONTAINER.stateDir}/nats/${name}`), svc);
    }
    for (const s of Object.values(c.services)) for (const v of s.volumes ?? []) if (!v.startsWith('./')) assert.ok(v.split(':')[0]! in c.volumes, v);
  });
  test('ok/health checks: gateway /health connected, relay /node-status connected, edges their ACME directory, NATS /healthz', () => {
    const hc = (s: string) => c.services[s]!.healthcheck!.test.slice(3).join(' ');
    assert.equal(hc('gw-root'), 'http://127.0.0.1:8080/health nats=connected');
    assert.equal(hc('relay-west'), 'http://127.0.0.1:9464/node-status nats.state=connected');
    assert.equal(hc('edge-iot-a'), 'https://127.0.0.1:8443/acme/directory');
    assert.equal(hc('edge-east'), 'https://127.0.0.1:9443/acme/directory');
    for (const s of ['nats-hub', 'nats-dc-west', 'nats-dc-east']) assert.equal(hc(s), 'http://127.0.0.1:8222/healthz');
  });
  test('ok/each node gets only its own key and nkey; each NATS server only its config', () => {
    for (const n of nodes) assert.deepEqual(secretNames(c.services[n]!), [`${n}.key.jwk`, `${n}.nk`]);
    for (const s of ['nats-hub', 'nats-dc-west', 'nats-dc-east']) assert.deepEqual(secretNames(c.services[s]!), [`${s}.conf`]);
    for (const s of Object.values(c.services)) for (const x of secretNames(s)) assert.ok(c.secrets[x], `secret ${x} undefined`);
  });
  test('ok/a node starts after its NATS server and its parent are healthy', () => {
    assert.deepEqual(c.services['edge-iot-a']!.depends_on, { 'nats-dc-west': { condition: 'service_healthy' }, 'relay-west': { condition: 'service_healthy' } });
    assert.deepEqual(c.services['nats-dc-west']!.depends_on, { 'nats-hub': { condition: 'service_healthy' } });
  });
});

describe('ra-mesh compose: topologies it refuses, files it mounts', () => {
  const refusals: Array<{ name: string; mutate: (t: typeof BASE & Record<string, unknown>) => void; error: RegExp }> = [
    { name: 'fail/a segments entry no edge serves (a typo must not leave a segment routable)', mutate: (t) => (t.segments = { 'seg-x': { isolated: true } } as never), error: /segments\.seg-x: no edge serves segment "seg-x"/ },
    { name: 'fail/an open bus (nats.auth none)', mutate: (t) => ((t.nats as Record<string, unknown>).auth = 'none'), error: /nats\.auth: compose deployments need "nkey"/ },
    { name: 'fail/a node id that is also a NATS service name', mutate: (t) => (t.nodes[1]!.id = 'nats-hub', t.nodes[2]!.parent = 'nats-hub'), error: /compose service "nats-hub"/ },
    { name: 'fail/a node on a NATS server that is neither the hub nor a dc leaf', mutate: (t) => ((t.nodes[0] as Record<string, unknown>).nats = 'nats://10.9.9.9:4222'), error: /node "gw" connects to NATS at nats:\/\/10\.9\.9\.9:4222/ },
  ];
  for (const r of refusals) {
    test(r.name, async () => {
      const t = structuredClone(BASE) as typeof BASE & Record<string, unknown>;
      r.mutate(t);
      const f = await topologyFile(t);
      assert.throws(() => planCompose(loadTopology(f), { composeFile: join(f, '..', 'docker-compose.yml') }), r.error);
    });
  }

  test('ok/files the topology names become file secrets of the services that use them, at container paths', async () => {
    const t = structuredClone(BASE) as Record<string, unknown> & typeof BASE;
    (t.nodes[2] as Record<string, unknown>).acme = { ...t.nodes[2]!.acme, tls: { cert: 'tls/edge.crt', key: 'tls/edge.key' } };
    (t.nodes[0] as Record<string, unknown>).cas = { type: 'stepca', url: 'https://ca.internal:9000', rootFingerprint: 'a'.repeat(64), provisioner: { type: 'jwk', name: 'p', keyFile: 'secrets/prov.key' } };
    const f = await topologyFile(t);
    const plan = planCompose(loadTopology(f), { composeFile: join(f, '..', 'docker-compose.yml') });
    const c = parse(plan.composeText) as ComposeFile;
    const edgeFiles = secretNames(c.services['edge']!).filter((s) => s.startsWith('file-'));
    const gwFiles = secretNames(c.services['gw']!).filter((s) => s.startsWith('file-'));
    assert.equal(edgeFiles.length, 2);
    assert.equal(gwFiles.length, 1);
    assert.match(gwFiles[0]!, /^file-prov\.key-[0-9a-f]{6}$/);
    assert.equal(c.secrets[gwFiles[0]!]!.file, './secrets/prov.key');
    assert.equal(secretNames(c.services['relay']!).filter((s) => s.startsWith('file-')).length, 0);
    const d = plan.derived;
    assert.equal(d.acme('edge').tls!.cert.startsWith(`${CONTAINER.files}/file-edge.crt-`), true);
    const cas = d.node('gw').cas as { provisioner: { keyFile: string } };
    assert.equal(cas.provisioner.keyFile, `${CONTAINER.files}/${gwFiles[0]}`);
    // Non-loopback validation overrides stay.
    assert.deepEqual(d.acme('edge').hosts, { 'b.example.test': '10.9.0.7' });
  });
});

describe('ra-mesh compose --secrets: keys, credentials, nats-server configs, rotation', () => {
  test('ok/secret files, public keys folder with links to the key secrets, NATS configs on every interface', async () => {
    const f = await topologyFile(BASE);
    const source = loadTopology(f);
    const plan = planCompose(source, { composeFile: join(f, '..', 'docker-compose.yml') });
    await writeComposeSecrets(source, plan);
    for (const id of ['gw', 'relay', 'edge']) {
      for (const name of [`${id}.key.jwk`, `${id}.nk`]) assert.equal((await stat(join(plan.secretsDir, name))).mode & 0o777, 0o600, name);
      assert.equal(await readFile(join(plan.secretsDir, `${id}.key.jwk`), 'utf8'), await readFile(join(source.keysDir(), `${id}.key.jwk`), 'utf8'));
      assert.equal(await readlink(join(plan.publicKeysDir, `${id}.key.jwk`)), `/run/secrets/${id}.key.jwk`);
      assert.equal(await readFile(join(plan.publicKeysDir, `${id}.pub.jwk`), 'utf8'), await readFile(join(source.keysDir(), `${id}.pub.jwk`), 'utf8'));
    }
    // No private key material in the folder every node mounts: only links.
    for (const name of await readdir(plan.publicKeysDir)) {
      if (name.endsWith('.key.jwk')) assert.ok((await lstat(join(plan.publicKeysDir, name))).isSymbolicLink(), name);
      else assert.doesNotMatch(await readFile(join(plan.publicKeysDir, name), 'utf8'), /"d"/, name);
    }
    const hub = await readFile(join(plan.secretsDir, 'nats-hub.conf'), 'utf8');
    const leaf = await readFile(join(plan.secretsDir, 'nats-dc-a.conf'), 'utf8');
    assert.equal((await stat(join(plan.secretsDir, 'nats-hub.conf'))).mode & 0o777, 0o600);
    assert.match(hub, /^host: "0\.0\.0\.0"$/m);
    assert.match(hub, /store_dir: "\/var\/lib\/ra-mesh\/nats\/hub"/);
    assert.match(hub, /^http: "127\.0\.0\.1:8222"$/m);
    assert.match(leaf, /url: "nats-leaf:\/\/leaf-dc-a:[^@"]+@nats-hub:7422"/);
    // Every node's nkey is a user of every server, with the permissions of its place in the topology.
    for (const id of ['gw', 'relay', 'edge']) assert.ok(hub.includes(`# ${id}`) && leaf.includes(`# ${id}`), id);
    assert.match(leaf, /publish: \{ allow: \["ramesh\.up\.relay\.edge"/);
  });

  test('ok/a key rotation reaches the public keys folder at each step (rotate, promote, retire)', async () => {
    const f = await topologyFile(BASE);
    const source = loadTopology(f);
    const plan = planCompose(source, { composeFile: join(f, '..', 'docker-compose.yml') });
    await writeComposeSecrets(source, plan);
    const files = async () => (await readdir(plan.publicKeysDir)).filter((n) => n.startsWith('relay.')).sort();
    const before = await readFile(join(plan.secretsDir, 'relay.key.jwk'), 'utf8');
    await rotateStart(source.keysDir(), 'relay');
    assert.ok((await writeComposeSecrets(source, plan)).includes(join(plan.publicKeysDir, 'relay.next.pub.jwk')));
    assert.deepEqual(await files(), ['relay.key.jwk', 'relay.next.pub.jwk', 'relay.pub.jwk']);
    // The next private key stays in the master folder until promote.
    assert.equal(await readFile(join(plan.secretsDir, 'relay.key.jwk'), 'utf8'), before);
    await rotatePromote(source.keysDir(), 'relay');
    await writeComposeSecrets(source, plan);
    assert.deepEqual(await files(), ['relay.key.jwk', 'relay.prev.pub.jwk', 'relay.pub.jwk']);
    assert.notEqual(await readFile(join(plan.secretsDir, 'relay.key.jwk'), 'utf8'), before);
    await rotateRetire(source.keysDir(), 'relay');
    await writeComposeSecrets(source, plan);
    assert.deepEqual(await files(), ['relay.key.jwk', 'relay.pub.jwk']);
    // Nothing changed: nothing written.
    assert.deepEqual(await writeComposeSecrets(source, plan), []);
  });
});
