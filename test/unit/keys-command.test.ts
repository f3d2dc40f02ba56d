import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { run } from '../harness/tools.js';
import { fileURLToPath } from 'node:url';

// `ra-mesh keys init` makes the keys a mesh accepts: ES256 by default, the topology's alg when its
// envelope.algs leaves ES256 out, the one --alg names otherwise; a key on disk keeps its alg.

const BIN = fileURLToPath(new URL('../../bin/ra-mesh.js', import.meta.url));
const topology = (algs?: string) =>
  `mesh: t\n${algs ? `envelope: {algs: ${algs}}\n` : ''}nats: {auth: none}\nnodes:\n  - {id: gw, role: gateway, dc: core}\n  - {id: edge-a, role: edge, dc: a, parent: gw}\n`;

const cases: Array<[string, string | undefined, string[], string]> = [
  ['ok/default: ES256', undefined, [], 'ES256'],
  ['ok/envelope.algs [EdDSA]: EdDSA keys', '[EdDSA]', [], 'EdDSA'],
  ['ok/--alg EdDSA on a mesh that accepts both', undefined, ['--alg', 'EdDSA'], 'EdDSA'],
];

for (const [name, algs, extra, want] of cases) {
  test(name, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ra-mesh-keys-init-'));
    try {
      await writeFile(join(dir, 't.yaml'), topology(algs));
      const r = await run(process.execPath, [BIN, 'keys', 'init', join(dir, 't.yaml'), ...extra], { env: { RA_MESH_LOG_LEVEL: 'error' } });
      assert.match(r.out, new RegExp(`^edge-a {2}${want} `, 'm'));
      const keysDir = /^keys in (\S+);/m.exec(r.out)?.[1];
      assert.ok(keysDir, r.out);
      const jwk = JSON.parse(await readFile(join(keysDir, 'edge-a.pub.jwk'), 'utf8')) as { alg: string };
      assert.equal(jwk.alg, want);
      // Run again without --alg: the stored key keeps its alg.
      const again = await run(process.execPath, [BIN, 'keys', 'init', join(dir, 't.yaml')], { env: { RA_MESH_LOG_LEVEL: 'error' } });
      assert.match(again.out, new RegExp(`^edge-a {2}${want} `, 'm'));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
}
