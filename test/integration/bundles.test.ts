import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startTestMesh, type TestMesh } from '../harness/mesh.js';
import { EdgeDriver } from '../harness/edge-driver.js';
import type { ResultPayload } from '../../shared/envelope/index.js';

// Bundles (envelope.bundle): a relay that receives more while its server stores one message sends
// what is ready next under one countersignature. Real nats-servers (hub + two leaves), a chain
// edge-b -> relay-2 -> relay-1 -> gw; the test acts as the edge.

const NAMES = 96;

describe('integration: relays bundle requests under load', { timeout: 180_000 }, () => {
  let m: TestMesh;
  let d: EdgeDriver;

  before(async () => {
    m = await startTestMesh({
      envelope: { bundle: { maxEnvelopes: 16, maxBytes: 262_144 } },
      nodes: [
        { id: 'gw', role: 'gateway', dc: 'core', policy: { allow: { dns: ['*.corp.test'] } } },
        { id: 'relay-1', role: 'relay', dc: 'dc-a', parent: 'gw', policy: { deny: { dns: ['*.pci.corp.test'] } } },
        { id: 'relay-2', role: 'relay', dc: 'dc-b', parent: 'relay-1', policy: { deny: { dns: ['*.lab.corp.test'] } } },
        { id: 'edge-b', role: 'edge', dc: 'dc-b', parent: 'relay-2' },
      ],
    });
    d = await EdgeDriver.open(m, 'edge-b');
  });
  after(async () => {
    await d?.close();
    await m?.stop();
  });

  /** Requests for `names`, all put in the edge's stream at once; their first results, by name. */
  async function burst(names: string[]): Promise<Map<string, ResultPayload>> {
    const envs = await Promise.all(names.map(async (n) => ({ n, ...(await d.issueEnvelope([n])) })));
    await Promise.all(envs.map((e) => d.send(e.id, e.jws)));
    const out = new Map<string, ResultPayload>();
    for (const e of envs) out.set(e.n, (await d.waitResults(e.id, 1, 90_000))[0]!);
    // Nothing is answered twice.
    await new Promise((r) => setTimeout(r, 300));
    for (const e of envs) assert.equal(d.results.get(e.id)!.length, 1, `${e.n}: one result`);
    return out;
  }

  /** How many results share each hop record of `node` (one bundle: one hop record). */
  function bundleSizes(results: Iterable<ResultPayload>, node: string): number[] {
    const sizes = new Map<string, number>();
    for (const r of results) {
      const h = r.hops.find((x) => x.node === node);
      if (!h) continue;
      const k = `${h.recvAt}/${h.sentAt}`;
      sizes.set(k, (sizes.get(k) ?? 0) + 1);
    }
    return [...sizes.values()];
  }

  test('ok/every request of a burst is issued once, and relays carried them in bundles', async () => {
    const names = Array.from({ length: NAMES }, (_, i) => `b${i}.corp.test`);
    const results = await burst(names);
    for (const [n, r] of results) {
      assert.equal(r.status, 'valid', `${n}: ${r.problem?.detail}`);
      assert.deepEqual(r.hops.map((h) => h.node), ['relay-2', 'relay-1'], n);
    }
    for (const relay of ['relay-2', 'relay-1']) {
      const sizes = bundleSizes(results.values(), relay);
      assert.ok(Math.max(...sizes) > 1, `${relay} sent some requests together: ${sizes.join(',')}`);
      assert.ok(Math.max(...sizes) <= 16, `${relay} kept to maxEnvelopes: ${sizes.join(',')}`);
    }
  });

  test('ok/requests a relay refuses inside a bundle are answered by that relay; the rest are issued', async () => {
    const names = Array.from({ length: 48 }, (_, i) => (i % 3 === 0 ? `x${i}.pci.corp.test` : i % 3 === 1 ? `y${i}.lab.corp.test` : `z${i}.corp.test`));
    const results = await burst(names);
    const refusedBy = new Map<string, number>();
    for (const [n, r] of results) {
      if (n.endsWith('.pci.corp.test') || n.endsWith('.lab.corp.test')) {
        const by = n.endsWith('.pci.corp.test') ? 'relay-1' : 'relay-2';
        assert.equal(r.status, 'invalid', n);
        assert.equal(r.problem?.type, 'urn:ietf:params:acme:error:rejectedIdentifier', n);
        assert.equal(r.gateway.node, by, `${n} is refused by ${by}`);
        refusedBy.set(by, (refusedBy.get(by) ?? 0) + 1);
      } else {
        assert.equal(r.status, 'valid', `${n}: ${r.problem?.detail}`);
        assert.equal(r.gateway.node, 'gw', n);
      }
    }
    assert.deepEqual(Object.fromEntries(refusedBy), { 'relay-1': 16, 'relay-2': 16 });
    // relay-1 refused requests that came inside relay-2's bundles, and sent the rest of those bundles on.
    const hopOf = (r: ResultPayload) => {
      const h = r.hops.find((x) => x.node === 'relay-2')!;
      return `${h.recvAt}/${h.sentAt}`;
    };
    const issuedBundles = new Set([...results.values()].filter((r) => r.status === 'valid').map(hopOf));
    const split = [...results.values()].filter((r) => r.gateway.node === 'relay-1' && issuedBundles.has(hopOf(r)));
    assert.ok(split.length > 0, 'a bundle of relay-2 held both a request relay-1 refused and one the gateway issued');
  });
});
