import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { httpGet, run } from '../harness/tools.js';
import { freePort } from '../harness/ports.js';
import { formatMs } from '../../services/gateway/status/format.js';
import { DENIED_SUFFIX, startObservedMesh, type ObservedMesh } from '../harness/observed-mesh.js';
import type { MeshStatus } from '../../services/gateway/status/mesh-status.js';

// `ra-mesh top` against a running mesh: --once and --json read the gateway's /status.json; the live
// view runs in a real pty (util-linux `script`), redraws, and quits on q.

const BIN = fileURLToPath(new URL('../../bin/ra-mesh.js', import.meta.url));
const ENV = { RA_MESH_LOG_LEVEL: 'error', NO_COLOR: '1' };

describe('integration: ra-mesh top', { timeout: 120_000 }, () => {
  let o: ObservedMesh;
  let file: string;

  before(async () => {
    o = await startObservedMesh(['top-0.corp.test', 'top-1.corp.test', 'top-2.corp.test']);
    file = o.m.topologyFile;
    for (const n of ['top-0.corp.test', 'top-1.corp.test', 'top-2.corp.test']) assert.equal(await o.order(n), 'valid');
    await o.sendEnvelope(`x.${DENIED_SUFFIX}`);
    const until = Date.now() + 15_000;
    while ((JSON.parse(await httpGet(`${o.m.mesh.gateway!.httpUrl}/status.json`)) as MeshStatus).totals.refused < 1) {
      if (Date.now() > until) throw new Error('refusal not counted');
      await new Promise((r) => setTimeout(r, 100));
    }
  });

  after(async () => {
    await o?.stop();
  });

  test('ok/--once: every node in tree order with its link, queue and the p50/p99 of /status.json', async () => {
    const { out } = await run(process.execPath, [BIN, 'top', file, '--once'], { env: ENV, timeoutMs: 30_000 });
    const s = JSON.parse(await httpGet(`${o.m.mesh.gateway!.httpUrl}/status.json`)) as MeshStatus;
    const lines = out.split('\n');
    assert.match(lines[0]!, /^ra-mesh top - mesh test-mesh via http:\/\/127\.0\.0\.1:\d+ - .* - issued 3, refused 1, rejected 0$/);
    const rows = ['gw', 'relay-1', 'relay-2', 'edge-b'].map((id) => lines.findIndex((l) => new RegExp(`^\\s*${id}\\s`).test(l)));
    assert.ok(rows.every((r, i) => r > 0 && (i === 0 || r > rows[i - 1]!)), `tree order: ${rows}\n${out}`);
    for (const l of s.links) {
      const row = lines.find((x) => new RegExp(`^\\s*${l.child}\\s`).test(x))!;
      assert.ok(row.includes(`up -> ${l.parent} (ok)`), row);
      // The link's wait as /status.json has it (a later gathering may differ by new samples: none come).
      assert.ok(row.includes(`${formatMs(l.wait!.p50)} / ${formatMs(l.wait!.p99)}`), `${row}\n${JSON.stringify(l.wait)}`);
    }
    assert.match(out, /recent refusals:\n.*relay-1 {2}refused by relay-1: rejectedIdentifier {2}[0-9a-f-]{36}/);
    assert.ok(!out.includes('\x1b['), 'no escape codes when not a terminal');
  });

  test('ok/--json: the gateway status document', async () => {
    const { out } = await run(process.execPath, [BIN, 'top', file, '--json'], { env: ENV, timeoutMs: 30_000 });
    const s = JSON.parse(out) as MeshStatus;
    assert.deepEqual(s.nodes.map((n) => n.id), ['gw', 'relay-1', 'relay-2', 'edge-b']);
    assert.equal(s.totals.issued, 3);
    assert.equal(s.links.find((l) => l.child === 'relay-1')!.wait!.count, 3);
  });

  test('ok/live in a pty: redraws on the alternate screen and quits on q', async () => {
    const cmd = `${process.execPath} ${BIN} top ${file} --interval 200`;
    const child = spawn('script', ['-q', '-e', '-c', cmd, '/dev/null'], { env: { ...process.env, ...ENV, TERM: 'xterm' }, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    try {
      const until = Date.now() + 20_000;
      // Two redraws: the screen is cleared (ESC[2J) before each.
      while ((out.match(/\x1b\[2J/g) ?? []).length < 2) {
        if (Date.now() > until) throw new Error(`no second redraw:\n${out}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.ok(out.includes('\x1b[?1049h'), 'alternate screen');
      assert.match(out, /edge-b/);
      child.stdin.write('q');
      const code = await Promise.race([exited, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 5_000))]);
      assert.equal(code, 0, out.slice(-2000));
      assert.ok(out.includes('\x1b[?1049l'), 'terminal restored');
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });

  const refused: Array<[string, () => Promise<string[]>, number, RegExp]> = [
    ['fail/gateway not answering', async () => ['--once', '--url', `http://127.0.0.1:${await freePort()}`], 1, /cannot read http:\/\/127\.0\.0\.1:\d+\/status\.json/],
    ['fail/interval below 100 ms', async () => ['--interval', '5'], 2, /--interval must be a number of milliseconds, at least 100/],
  ];
  for (const [name, extra, code, message] of refused) {
    test(name, async () => {
      await assert.rejects(run(process.execPath, [BIN, 'top', file, ...(await extra())], { env: ENV, timeoutMs: 30_000 }), (e: Error & { code: number; out: string }) => {
        assert.equal(e.code, code);
        assert.match(e.out, message);
        return true;
      });
    });
  }
});
