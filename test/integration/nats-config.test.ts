import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { connect } from 'nats';
import { stringify } from 'yaml';
import { loadTopology } from '../../shared/config/index.js';
import { nodeConnectOptions } from '../../shared/bus/auth.js';
import { freePorts } from '../harness/ports.js';
import { run } from '../harness/tools.js';

// `ra-mesh nats-config` writes configs an operator runs with their own nats-server: checked with
// `nats-server -t`, then started from those files; nodes get in with their own nkeys only.

const BIN = fileURLToPath(new URL('../../bin/ra-mesh.js', import.meta.url));

describe('integration: ra-mesh nats-config', { timeout: 60_000 }, () => {
  let dir: string;
  const procs: ChildProcess[] = [];
  after(async () => {
    for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('ok/configs pass nats-server -t, run, and admit a node by its nkey only', async () => {
    dir = await mkdtemp(join(tmpdir(), 'ra-mesh-nats-config-'));
    const [hub, leafnodes, west] = await freePorts(3, '127.0.0.1');
    const file = join(dir, 'topology.yaml');
    await writeFile(
      file,
      stringify({
        mesh: 'cfg',
        stateDir: 'state',
        nats: { hub: `nats://127.0.0.1:${hub}`, leafnodeListen: `127.0.0.1:${leafnodes}`, dcs: { west: `nats://127.0.0.1:${west}` } },
        nodes: [
          { id: 'gw', role: 'gateway', dc: 'core' },
          { id: 'edge-w', role: 'edge', dc: 'west', parent: 'gw' },
        ],
      }),
    );
    const out = join(dir, 'conf');
    const r = await run(process.execPath, [BIN, 'nats-config', file, '--out', out], { env: { RA_MESH_LOG_LEVEL: 'error' } });
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /hub\.conf/);
    assert.deepEqual((await readdir(out)).sort(), ['hub.conf', 'west.conf']);
    const topology = loadTopology(file);
    assert.deepEqual((await readdir(topology.natsCredentialsDir())).sort(), ['edge-w.nk', 'gw.nk', 'leaf-west.pass']);
    for (const c of ['hub.conf', 'west.conf']) {
      assert.equal((await stat(join(out, c))).mode & 0o777, 0o600);
      const t = await run('nats-server', ['-c', join(out, c), '-t']);
      assert.equal(t.code, 0, t.out);
    }
    // Running again keeps the credentials (a node's seed must not change under it).
    const again = await run(process.execPath, [BIN, 'nats-config', file, '--out', out], { env: { RA_MESH_LOG_LEVEL: 'error' } });
    assert.equal(again.code, 0, again.out);
    const opts = await nodeConnectOptions(topology, 'edge-w');

    for (const c of ['hub.conf', 'west.conf']) procs.push(spawn('nats-server', ['-c', join(out, c)], { stdio: 'ignore' }));
    const until = Date.now() + 15_000;
    for (;;) {
      try {
        const nc = await connect({ servers: `nats://127.0.0.1:${west}`, reconnect: false, ...opts });
        await nc.close();
        break;
      } catch (e) {
        if (Date.now() > until) throw e;
        await new Promise((res) => setTimeout(res, 100));
      }
    }
    await assert.rejects(connect({ servers: `nats://127.0.0.1:${west}`, reconnect: false }), /AUTHORIZATION_VIOLATION|Authorization Violation/i);
  });

  test('fail/a bad topology names the YAML path', async () => {
    const bad = join(dir, 'bad.yaml');
    await writeFile(bad, 'mesh: x\nnats: {auth: maybe}\nnodes:\n  - {id: gw, role: gateway, dc: core}\n');
    await assert.rejects(run(process.execPath, [BIN, 'nats-config', bad], { env: { RA_MESH_LOG_LEVEL: 'error' } }), (e: Error & { code: number; out: string }) => {
      assert.equal(e.code, 1);
      assert.match(e.out, /nats\.auth \(line 2:14\): Invalid option/);
      return true;
    });
  });
});
