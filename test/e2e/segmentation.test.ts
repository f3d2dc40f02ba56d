// Segmentation e2e with network namespaces (no Docker), as root: edge A in namespace A (an isolated segment:
// no route out of its subnet), edge B in namespace B (a routed segment: default route via the router), the
// hub and leaf NATS servers, the relay and the gateway in a router namespace that forwards packets (ip_forward
// set inside that namespace only). Every node is its own `ra-mesh up --only ... --no-nats` process inside its
// namespace; nats-servers run with the configs of `ra-mesh nats-config`. Shows:
//   - a client in A (lego) gets a certificate via edge A (http-01 validated inside segment A);
//   - from A, nothing of segment B is reachable (edge B, B's devices, the router's address in B), while B
//     reaches them itself; B cannot reach A either, although the router forwards B's packets;
//   - validating a name that resolves into segment B fails at edge A (a `connection` problem), although the
//     responder in B serves the right key authorization: the same name and responder validate at edge B.
// Addresses exist only inside the namespaces this test creates; they are removed at the end, also on failure.
// Without root (or without netns support) the test fails, naming why: CI runs as root.

import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { opensslVerify, pemCerts, run, sanNames } from '../harness/tools.js';

const BIN = fileURLToPath(new URL('../../bin/ra-mesh.js', import.meta.url));
const tag = `${process.pid.toString(36)}${randomBytes(2).toString('hex')}`.slice(-7);
const NS = { a: `ramesh-${tag}-a`, b: `ramesh-${tag}-b`, r: `ramesh-${tag}-r` };
// veth names: at most 15 characters.
const VETH = { a: `rm${tag}a`, ar: `rm${tag}ar`, b: `rm${tag}b`, br: `rm${tag}br` };
// Only inside the namespaces above.
const IP = {
  routerA: '10.77.1.1',
  edgeA: '10.77.1.2',
  deviceA: '10.77.1.10',
  routerB: '10.77.2.1',
  edgeB: '10.77.2.2',
  deviceB: '10.77.2.10',
};
const NAME_A = 'device.seg-a.example.test';
const NAME_B = 'device.seg-b.example.test';
const HTTP01 = 5002;
const ACME = 8443;
const HUB_MONITOR = 8222;
const WAIT_MS = 60_000;

const children = new Set<ChildProcess>();
let nsCreated = false;

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'], timeout: 10_000 });
}

function deleteNamespaces(): void {
  for (const ns of Object.values(NS)) {
    try {
      execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore', timeout: 10_000 });
    } catch {
      /* not there */
    }
  }
}

// A test runner that dies without running after(): no process and no namespace stays behind.
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
  if (nsCreated) deleteNamespaces();
});

/** A long-running process inside a namespace (`ip netns exec` execs it: the pid is the process itself). */
function spawnIn(ns: string, cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): { child: ChildProcess; output: () => string } {
  const child = spawn('ip', ['netns', 'exec', ns, cmd, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  children.add(child);
  child.once('exit', () => children.delete(child));
  return { child, output: () => out };
}

async function stopAll(): Promise<void> {
  const all = [...children];
  await Promise.all(
    all.map(
      (c) =>
        new Promise<void>((res) => {
          if (c.exitCode !== null || c.signalCode !== null) return res();
          const t = setTimeout(() => c.kill('SIGKILL'), 5_000);
          c.once('exit', () => (clearTimeout(t), res()));
          c.kill('SIGTERM');
        }),
    ),
  );
}

/** A command run to completion inside a namespace. */
function runIn(ns: string, cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}) {
  return run('ip', ['netns', 'exec', ns, cmd, ...args], opts);
}

const PROBE = `const [h,p]=process.argv.slice(1);const s=require('net').connect({host:h,port:+p,timeout:2000});
s.on('connect',()=>{process.stdout.write('open');process.exit(0)});
s.on('timeout',()=>{process.stdout.write('timeout');process.exit(3)});
s.on('error',(e)=>{process.stdout.write(e.code||e.message);process.exit(3)});`;

/** TCP connect from inside a namespace: 'open', or why not (ENETUNREACH, timeout, ECONNREFUSED...). */
async function probe(ns: string, host: string, port: number): Promise<string> {
  return runIn(ns, process.execPath, ['-e', PROBE, host, String(port)], { timeoutMs: 10_000 }).then(
    (r) => r.out.trim(),
    (e: { out?: string }) => (e.out ?? String(e)).trim(),
  );
}

async function fetchIn(ns: string, url: string): Promise<string> {
  const js = `fetch(process.argv[1],{signal:AbortSignal.timeout(3000)}).then(async r=>{if(!r.ok)throw new Error('HTTP '+r.status);process.stdout.write(await r.text())}).catch(e=>{console.error(e.message);process.exit(1)})`;
  return (await runIn(ns, process.execPath, ['-e', js, url], { timeoutMs: 10_000 })).out;
}

async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = WAIT_MS, detail: () => string = () => ''): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > until) assert.fail(`${what} not within ${timeoutMs} ms\n${detail()}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('e2e: segmented subnets in network namespaces (edge A, edge B, router with leaf NATS and relay)', { timeout: 300_000 }, () => {
  let dir: string;
  let topo: string;
  const ups: Array<{ name: string; output: () => string; child: ChildProcess }> = [];

  // A setup failure (no root, no netns support) fails every test below with its reason: counted, never skipped.
  let setupError: Error | undefined;
  const ready = () => {
    if (setupError) throw setupError;
  };
  before(async () => {
    try {
      await setUp();
    } catch (e) {
      setupError = e as Error;
    }
  });

  async function setUp(): Promise<void> {
    if (process.getuid?.() !== 0) {
      assert.fail('the segmentation e2e test needs root (ip netns, veth pairs); CI runs as root: run it as root, it is not skipped');
    }
    dir = await mkdtemp(join(tmpdir(), 'ra-mesh-seg-'));
    // Namespaces and links, created directly inside the namespaces (never in the host's own).
    try {
      nsCreated = true;
      for (const ns of Object.values(NS)) {
        ip('netns', 'add', ns);
        ip('-n', ns, 'link', 'set', 'lo', 'up');
      }
      ip('-n', NS.a, 'link', 'add', VETH.a, 'type', 'veth', 'peer', 'name', VETH.ar, 'netns', NS.r);
      ip('-n', NS.b, 'link', 'add', VETH.b, 'type', 'veth', 'peer', 'name', VETH.br, 'netns', NS.r);
      ip('-n', NS.a, 'addr', 'add', `${IP.edgeA}/24`, 'dev', VETH.a);
      ip('-n', NS.a, 'addr', 'add', `${IP.deviceA}/24`, 'dev', VETH.a);
      ip('-n', NS.a, 'link', 'set', VETH.a, 'up');
      ip('-n', NS.b, 'addr', 'add', `${IP.edgeB}/24`, 'dev', VETH.b);
      ip('-n', NS.b, 'addr', 'add', `${IP.deviceB}/24`, 'dev', VETH.b);
      ip('-n', NS.b, 'link', 'set', VETH.b, 'up');
      ip('-n', NS.r, 'addr', 'add', `${IP.routerA}/24`, 'dev', VETH.ar);
      ip('-n', NS.r, 'addr', 'add', `${IP.routerB}/24`, 'dev', VETH.br);
      ip('-n', NS.r, 'link', 'set', VETH.ar, 'up');
      ip('-n', NS.r, 'link', 'set', VETH.br, 'up');
      // Segment B is routed (default route via the router); segment A is isolated: only its own subnet.
      ip('-n', NS.b, 'route', 'add', 'default', 'via', IP.routerB);
      // The router forwards, inside its namespace only.
      execFileSync('ip', ['netns', 'exec', NS.r, 'sysctl', '-qw', 'net.ipv4.ip_forward=1'], { stdio: 'ignore', timeout: 10_000 });
    } catch (e) {
      const err = e as { stderr?: Buffer; message: string };
      assert.fail(`cannot build the network namespaces (netns support, root): ${err.stderr?.toString().trim() || err.message}`);
    }

    const topology = {
      mesh: 'seg-test',
      stateDir: 'state',
      nats: {
        hub: 'nats://127.0.0.1:4222',
        leafnodeListen: '127.0.0.1:7422',
        dcs: { 'dc-a': `nats://${IP.routerA}:4222`, 'dc-b': `nats://${IP.routerB}:4222` },
      },
      segments: { 'seg-a': { isolated: true }, 'seg-b': { isolated: false } },
      nodes: [
        { id: 'gw', role: 'gateway', dc: 'core', http: '127.0.0.1:8080', policy: { allow: { dns: ['*.seg-a.example.test', '*.seg-b.example.test'] } } },
        { id: 'relay', role: 'relay', dc: 'dc-a', parent: 'gw' },
        {
          id: 'edge-a',
          role: 'edge',
          dc: 'dc-a',
          segment: 'seg-a',
          parent: 'relay',
          // Edge A's policy allows names of segment B: what stops their validation is the network, not a rule.
          policy: { allow: { dns: ['*.seg-a.example.test', '*.seg-b.example.test'] } },
          acme: { listen: `${IP.edgeA}:${ACME}`, http01Port: HTTP01, hosts: { [NAME_A]: IP.deviceA, [NAME_B]: IP.deviceB } },
        },
        {
          id: 'edge-b',
          role: 'edge',
          dc: 'dc-b',
          segment: 'seg-b',
          parent: 'gw',
          acme: { listen: `${IP.edgeB}:${ACME}`, http01Port: HTTP01, hosts: { [NAME_B]: IP.deviceB } },
        },
      ],
    };
    topo = join(dir, 'topology.yaml');
    await writeFile(topo, stringify(topology));
    await run(process.execPath, [BIN, 'keys', 'init', topo]);
    const natsDir = join(dir, 'nats');
    await run(process.execPath, [BIN, 'nats-config', topo, '--out', natsDir]);
    // The hub's monitoring port (router loopback) tells when both leaf links are up.
    await writeFile(join(natsDir, 'hub.conf'), (await readFile(join(natsDir, 'hub.conf'), 'utf8')) + `http: "127.0.0.1:${HUB_MONITOR}"\n`);
    const nats = (name: string) => spawnIn(NS.r, 'nats-server', ['-c', join(natsDir, `${name}.conf`)]);
    const hub = nats('hub');
    const leaves = [nats('dc-a'), nats('dc-b')];
    await waitFor(
      'both leaf links at the hub',
      async () => {
        const j = JSON.parse(await fetchIn(NS.r, `http://127.0.0.1:${HUB_MONITOR}/leafz`)) as { leafnodes?: number };
        return (j.leafnodes ?? 0) >= 2 ? true : undefined;
      },
      WAIT_MS,
      () => [hub, ...leaves].map((s) => s.output()).join('\n'),
    );
    // One process per namespace: gateway and relay in the router, each edge in its segment.
    const up = (name: string, ns: string, only: string) => {
      const p = spawnIn(ns, process.execPath, [BIN, 'up', topo, '--only', only, '--no-nats'], { RA_MESH_LOG_LEVEL: 'warn' });
      ups.push({ name, ...p });
      return p;
    };
    for (const [name, ns, only] of [
      ['router', NS.r, 'gw,relay'],
      ['edge-a', NS.a, 'edge-a'],
      ['edge-b', NS.b, 'edge-b'],
    ] as const) {
      const p = up(name, ns, only);
      const state = await waitFor(`${name} up`, async () => (p.output().includes('press Ctrl-C to stop') ? 'up' : p.child.exitCode !== null ? 'exited' : undefined), WAIT_MS, p.output);
      if (state === 'exited') assert.fail(`${name} exited before it was up:\n${p.output()}`);
    }
  }

  after(async () => {
    await stopAll();
    deleteNamespaces();
    nsCreated = false;
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('ok/a client in segment A gets a certificate via edge A (lego, http-01 inside the segment)', async () => {
    ready();
    const lego = join(dir, 'lego-a');
    await runIn(NS.a, 'lego', ['--server', `https://${IP.edgeA}:${ACME}/acme/directory`, '--email', 'ops@example.test', '--accept-tos', '--path', lego,
      '--domains', NAME_A, '--http', '--http.port', `${IP.deviceA}:${HTTP01}`, 'run'], {
      env: { LEGO_CA_CERTIFICATES: join(dir, 'state', 'nodes', 'edge-a', 'tls-cert.pem') },
      timeoutMs: 90_000,
    });
    const chain = await readFile(join(lego, 'certificates', `${NAME_A}.crt`), 'utf8');
    assert.deepEqual(sanNames(pemCerts(chain)[0]!), [NAME_A]);
    const root = await fetchIn(NS.r, 'http://127.0.0.1:8080/roots.pem');
    assert.match(await opensslVerify(dir, chain, root), /OK/);
  });

  // Reachability seen from inside each segment. The listeners are up (the ok/ rows reach them from their own
  // segment): a failed row is the segmentation, not a dead service.
  // Why not: segment A has no route out of its subnet (ENETUNREACH at once); B's packets to A are forwarded by
  // the router, but A has no route back, so B's connection attempt times out.
  const reach: Array<{ name: string; from: keyof typeof NS; host: string; port: number; want: string }> = [
    { name: 'ok/segment A reaches its leaf NATS on the router', from: 'a', host: IP.routerA, port: 4222, want: 'open' },
    { name: 'ok/segment A reaches edge A', from: 'a', host: IP.edgeA, port: ACME, want: 'open' },
    { name: 'ok/segment B reaches edge B', from: 'b', host: IP.edgeB, port: ACME, want: 'open' },
    { name: 'ok/segment B reaches its leaf NATS on the router', from: 'b', host: IP.routerB, port: 4222, want: 'open' },
    { name: 'ok/the router reaches edge B', from: 'r', host: IP.edgeB, port: ACME, want: 'open' },
    { name: 'fail/segment A cannot reach edge B', from: 'a', host: IP.edgeB, port: ACME, want: 'ENETUNREACH' },
    { name: "fail/segment A cannot reach the router's address in segment B (leaf NATS B)", from: 'a', host: IP.routerB, port: 4222, want: 'ENETUNREACH' },
    { name: 'fail/segment B cannot reach edge A, although the router forwards its packets', from: 'b', host: IP.edgeA, port: ACME, want: 'timeout' },
  ];
  for (const c of reach) {
    test(c.name, async () => {
      ready();
      assert.equal(await probe(NS[c.from], c.host, c.port), c.want, `TCP ${c.host}:${c.port} from ${NS[c.from]}`);
    });
  }

  test('fail/validation of a name that resolves into segment B fails at edge A; the same name and responder validate at edge B', async () => {
    ready();
    // A device in segment B serves lego's challenge files (lego --http.webroot writes them, this serves them).
    const webroot = join(dir, 'webroot');
    await mkdir(join(webroot, '.well-known', 'acme-challenge'), { recursive: true });
    await writeFile(join(webroot, '.well-known', 'acme-challenge', 'ping'), 'pong');
    const responder = spawnIn(NS.b, '/usr/bin/python3', ['-m', 'http.server', String(HTTP01), '--bind', IP.deviceB, '--directory', webroot]);
    await waitFor('the responder in segment B', async () => ((await fetchIn(NS.b, `http://${IP.deviceB}:${HTTP01}/.well-known/acme-challenge/ping`)) === 'pong' ? true : undefined), WAIT_MS, responder.output);
    assert.equal(await probe(NS.a, IP.deviceB, HTTP01), 'ENETUNREACH', 'the device in segment B, from segment A');

    const legoRun = (ns: string, edgeIp: string, edge: string, path: string) =>
      runIn(ns, 'lego', ['--server', `https://${edgeIp}:${ACME}/acme/directory`, '--email', 'ops@example.test', '--accept-tos', '--path', path,
        '--domains', NAME_B, '--http', '--http.webroot', webroot, 'run'], {
        env: { LEGO_CA_CERTIFICATES: join(dir, 'state', 'nodes', edge, 'tls-cert.pem') },
        timeoutMs: 90_000,
      });
    const refused = await legoRun(NS.a, IP.edgeA, 'edge-a', join(dir, 'lego-a-b')).then(
      () => null,
      (e: { out?: string }) => e.out ?? String(e),
    );
    assert.ok(refused !== null, 'edge A must not validate a name that resolves into segment B');
    assert.match(refused, /urn:ietf:params:acme:error:connection/);
    assert.ok(refused.includes(NAME_B), refused);

    await legoRun(NS.b, IP.edgeB, 'edge-b', join(dir, 'lego-b'));
    const chain = await readFile(join(dir, 'lego-b', 'certificates', `${NAME_B}.crt`), 'utf8');
    assert.deepEqual(sanNames(pemCerts(chain)[0]!), [NAME_B]);
  });

  test('ok/every node process is still running (no node died during the run)', () => {
    ready();
    for (const u of ups) assert.equal(u.child.exitCode, null, `${u.name} exited:\n${u.output()}`);
  });
});
