import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { freePorts } from '../harness/ports.js';
import { httpGet, opensslVerify, run } from '../harness/tools.js';

const BIN = fileURLToPath(new URL('../../bin/ra-mesh.js', import.meta.url));

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });
}

describe('e2e: ra-mesh up starts nats-servers and every node; Ctrl-C stops it cleanly', { timeout: 240_000 }, () => {
  let dir: string;
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('ok/up, issue with lego, SIGINT', async () => {
    dir = await mkdtemp(join(tmpdir(), 'ra-mesh-up-'));
    const [hub, leafListen, leafA, leafB, gwHttp, acmeA, acmeB, http01] = await freePorts(8);
    const topo = {
      mesh: 'cli-test',
      stateDir: 'state',
      nats: { hub: `nats://127.0.0.1:${hub}`, leafnodeListen: `127.0.0.1:${leafListen}`, dcs: { 'dc-a': `nats://127.0.0.1:${leafA}`, 'dc-b': `nats://127.0.0.1:${leafB}` } },
      nodes: [
        { id: 'gw', role: 'gateway', dc: 'core', http: `127.0.0.1:${gwHttp}` },
        { id: 'relay-a', role: 'relay', dc: 'dc-a', parent: 'gw' },
        { id: 'edge-a', role: 'edge', dc: 'dc-a', parent: 'relay-a', acme: { listen: `127.0.0.1:${acmeA}`, http01Port: http01, hosts: { 'up.example.test': '127.0.0.1' } } },
        { id: 'edge-b', role: 'edge', dc: 'dc-b', parent: 'gw', acme: { listen: `127.0.0.1:${acmeB}` } },
      ],
    };
    await writeFile(join(dir, 'topology.yaml'), stringify(topo));
    const child = spawn(process.execPath, [BIN, 'up', join(dir, 'topology.yaml')], { env: { ...process.env, RA_MESH_LOG_LEVEL: 'warn' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      const until = Date.now() + 60_000;
      while (!out.includes('press Ctrl-C to stop')) {
        if (Date.now() > until || child.exitCode !== null) assert.fail(`mesh did not come up:\n${out}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.match(out, new RegExp(`edge edge-a: ACME directory https://127\\.0\\.0\\.1:${acmeA}/acme/directory`));
      assert.match(out, new RegExp(`edge edge-b: ACME directory https://127\\.0\\.0\\.1:${acmeB}/acme/directory`));
      const tlsCert = join(dir, 'state', 'nodes', 'edge-a', 'tls-cert.pem');
      await run('lego', ['--server', `https://127.0.0.1:${acmeA}/acme/directory`, '--email', 'ops@example.test', '--accept-tos', '--path', join(dir, 'lego'),
        '--domains', 'up.example.test', '--http', '--http.port', `127.0.0.1:${http01}`, 'run'], { env: { LEGO_CA_CERTIFICATES: tlsCert } });
      const chain = await readFile(join(dir, 'lego', 'certificates', 'up.example.test.crt'), 'utf8');
      const root = await httpGet(`http://127.0.0.1:${gwHttp}/roots.pem`);
      assert.match(await opensslVerify(dir, chain, root), /OK/);
      // The root fingerprint printed at start is the one of the served root.
      const der = Buffer.from(root.replace(/-----[^-]+-----|\s/g, ''), 'base64');
      const fp = createHash('sha256').update(der).digest('hex').toUpperCase().match(/../g)!.join(':');
      assert.ok(out.includes(`root SHA-256 fingerprint ${fp}`), out);
    } finally {
      child.kill('SIGINT');
    }
    assert.equal(await exited, 0, out);
    assert.match(out, /mesh stopped/);
    // Every listener is gone: nats-servers, ACME servers, gateway HTTP.
    for (const p of [hub!, leafA!, leafB!, gwHttp!, acmeA!, acmeB!]) assert.equal(await portOpen(p), false, `port ${p} still open`);
  });

  test('fail/validate names the YAML path of a bad topology', async () => {
    const d = await mkdtemp(join(tmpdir(), 'ra-mesh-validate-'));
    try {
      await writeFile(join(d, 'bad.yaml'), 'mesh: x\nnodes:\n  - {id: gw, role: gateway, dc: a}\n  - {id: e, role: edge, dc: a, parent: nope}\n');
      const err = await run(process.execPath, [BIN, 'validate', join(d, 'bad.yaml')]).then(() => null, (e: { code: number; out: string }) => e);
      assert.ok(err, 'validate must fail');
      assert.equal(err.code, 1);
      assert.match(err.out, /nodes\[1\]\.parent \(line 4:\d+\): unknown node "nope"/);
      const ok = await run(process.execPath, [BIN, 'validate', fileURLToPath(new URL('../../deploy/topology.example.yaml', import.meta.url))]);
      assert.match(ok.out, /└─ edge-iot-a \(edge, dc-west\/iot-a/);
    } finally {
      await rm(d, { recursive: true, force: true });
    }
  });
});
