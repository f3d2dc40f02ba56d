import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { GatewayService } from '../../services/gateway/index.js';
import { EdgeDriver } from '../harness/edge-driver.js';
import { FakeVault } from '../harness/fake-vault.js';
import { startTestMesh, type TestMesh } from '../harness/mesh.js';

// The gateway's limit on calls to its CA service (cas.maxInFlight) and the queue's in-progress acks,
// in a real mesh (hub + leaf nats-servers; edge-a -> relay-1 -> gw) against the fake Vault of
// test/harness/fake-vault.ts answering each sign call after a delay (a Vault under load). A burst from
// the edge reaches the gateway as one or a few messages (a bundle) whose requests queue for two slots:
// handling them takes several times `nats.queue.ackWait` (1 s here), which in-progress acks must cover,
// also past ten times ackWait while the gateway answers one request after another (queue.ts keepWorking).

const ROLE_ID = 'a1b2c3d4-slots-role';
const SECRET_ID = 'slots-secret-id';
const BURST = 12;
/** 48 requests through 2 slots at 500 ms a call: 12 s, more than ten times ackWait. */
const LONG_BURST = 48;
const SIGN_DELAY_MS = 500;
const SLOTS = 2;

/** The value of one series of a gateway metric (a histogram's `_count`); undefined when absent. */
async function metric(gw: GatewayService, name: string, labels: Record<string, string>): Promise<number | undefined> {
  const m = gw.metrics.registry.getSingleMetric(name);
  if (!m) return undefined;
  const { values } = (await m.get()) as { values: Array<{ value: number; labels: Record<string, unknown>; metricName?: string }> };
  const counts = values.some((v) => v.metricName === `${name}_count`);
  const series = counts ? `${name}_count` : name;
  return values.find((v) => (v.metricName ?? name) === series && Object.entries(labels).every(([k, x]) => v.labels[k] === x))?.value;
}

describe('integration: cas.maxInFlight and in-progress acks behind a slow CA service', { timeout: 180_000 }, () => {
  let dir: string;
  let m: TestMesh;
  let vault: FakeVault;
  let gw: GatewayService;
  let edge: EdgeDriver;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ra-mesh-cas-slots-'));
    vault = await FakeVault.start({
      dir,
      roles: { 'gw-any': { key_type: 'any', allowed_domains: ['corp.test'], allow_subdomains: true, max_ttl: 7 * 86_400 } },
      approle: { roleId: ROLE_ID, secretIds: [SECRET_ID] },
    });
    m = await startTestMesh({
      nats: { queue: { ackWait: '1s' } },
      external: ['gw'],
      nodes: [
        {
          id: 'gw',
          role: 'gateway',
          dc: 'core',
          policy: { allow: { dns: ['*.corp.test'] } },
          cas: {
            type: 'vault',
            url: vault.url,
            caFile: vault.tlsCaFile,
            pkiRoleDefault: 'gw-any',
            auth: { type: 'approle', roleId: ROLE_ID, secretId: SECRET_ID },
            timeout: '10s',
            maxInFlight: SLOTS,
          },
        },
        { id: 'relay-1', role: 'relay', dc: 'dc-a', parent: 'gw' },
        { id: 'edge-a', role: 'edge', dc: 'dc-a', parent: 'relay-1' },
      ],
    });
    gw = await GatewayService.create({ topology: m.topology, nodeId: 'gw' });
    await gw.start();
    edge = await EdgeDriver.open(m, 'edge-a');
  });

  after(async () => {
    await gw?.stop();
    await edge?.close();
    await m?.stop();
    await vault?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  test('ok/a burst: never more than maxInFlight sign calls at the CA, each request signed once and answered once, no redelivery', async () => {
    // Warm: the Vault login and one certificate, so the burst below measures signing only.
    const warm = await edge.issueEnvelope(['warm.corp.test']);
    assert.equal((await edge.exchange(warm.id, warm.jws)).status, 'valid');
    vault.resetPeaks();
    const signsBefore = vault.callsOf('sign').length;
    const answeredBefore = (await metric(gw, 'ramesh_hop_processing_seconds', { outcome: 'answered' })) ?? 0;
    vault.inject('sign', BURST, { delayMs: SIGN_DELAY_MS });

    const envs = await Promise.all(Array.from({ length: BURST }, (_, i) => edge.issueEnvelope([`b${i}.corp.test`])));
    await Promise.all(envs.map((e) => edge.send(e.id, e.jws)));
    // While the burst is worked through, the calls beyond the slots wait, and the gauge says so.
    let sawWaiting = 0;
    const done = Promise.all(envs.map((e) => edge.waitResults(e.id, 1, 60_000)));
    let finished = false;
    void done.finally(() => (finished = true));
    while (!finished) {
      sawWaiting = Math.max(sawWaiting, (await metric(gw, 'ramesh_cas_calls_in_flight', { state: 'waiting' })) ?? 0);
      assert.ok(((await metric(gw, 'ramesh_cas_calls_in_flight', { state: 'running' })) ?? 0) <= SLOTS);
      await new Promise((r) => setTimeout(r, 50));
    }
    const results = await done;
    for (const [r] of results) assert.equal(r!.status, 'valid', JSON.stringify(r!.problem));
    assert.equal(vault.peakInFlight.get('sign'), SLOTS, `the fake Vault saw ${vault.peakInFlight.get('sign')} sign calls at once`);
    assert.ok(sawWaiting > 0, 'ramesh_cas_calls_in_flight{state="waiting"} showed calls waiting for a slot');
    assert.equal(vault.callsOf('sign').length - signsBefore, BURST, 'one sign call per request');
    // The burst took several times ackWait: without in-progress acks JetStream would have delivered
    // the gateway's messages again, answered from the result store (and sent a second result).
    await new Promise((r) => setTimeout(r, 1_500));
    for (const e of envs) assert.equal(edge.results.get(e.id)!.length, 1, `one result for ${e.id}`);
    assert.equal((await metric(gw, 'ramesh_hop_processing_seconds', { outcome: 'answered' })) ?? 0, answeredBefore, 'nothing answered from the result store');
    assert.equal((await metric(gw, 'ramesh_cas_calls_in_flight', { state: 'waiting' })) ?? 0, 0);
  });

  test('ok/a burst taking more than ten times ackWait behind the slots: every message kept while requests are answered, one result each', async () => {
    const signsBefore = vault.callsOf('sign').length;
    const answeredBefore = (await metric(gw, 'ramesh_hop_processing_seconds', { outcome: 'answered' })) ?? 0;
    vault.inject('sign', LONG_BURST, { delayMs: SIGN_DELAY_MS });
    const envs = await Promise.all(Array.from({ length: LONG_BURST }, (_, i) => edge.issueEnvelope([`long${i}.corp.test`])));
    const t0 = Date.now();
    await Promise.all(envs.map((e) => edge.send(e.id, e.jws)));
    const results = await Promise.all(envs.map((e) => edge.waitResults(e.id, 1, 90_000)));
    const ms = Date.now() - t0;
    for (const [r] of results) assert.equal(r!.status, 'valid', JSON.stringify(r!.problem));
    // The precondition of the case: the last requests waited past the old fixed bound (10 x ackWait).
    assert.ok(ms > 10_000, `the burst took ${ms} ms`);
    assert.equal(vault.callsOf('sign').length - signsBefore, LONG_BURST, 'one sign call per request');
    await new Promise((r) => setTimeout(r, 2_500));
    for (const e of envs) assert.equal(edge.results.get(e.id)!.length, 1, `one result for ${e.id}`);
    assert.equal((await metric(gw, 'ramesh_hop_processing_seconds', { outcome: 'answered' })) ?? 0, answeredBefore, 'nothing answered from the result store');
  });
});
