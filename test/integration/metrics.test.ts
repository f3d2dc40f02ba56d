import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { httpGet } from '../harness/tools.js';
import { DENIED_SUFFIX, startObservedMesh, type ObservedMesh, type Samples } from '../harness/observed-mesh.js';
import type { MeshStatus } from '../../services/gateway/status/mesh-status.js';
import { leafSerial } from '../../shared/pki/index.js';

// A known sequence on a real mesh (hub + 2 leaf nats-servers, edge-b -> relay-2 -> relay-1 -> gw):
// N certificates issued through ACME; J orders refused at newOrder by the edge (it checks every layer
// of its path, here relay-1's); M envelopes signed by edge-b refused by relay-1's layer (as from an
// edge with an older topology); K junk envelopes in edge-b's outbound stream. Then every node's
// /metrics (read over HTTP, as Prometheus would) holds exactly those counts, and /status.json agrees.

const N = 12;
const J = 2;
const M = 3;
const K = 4;

describe('integration: metrics after a known sequence of issuances, refusals and junk', { timeout: 180_000 }, () => {
  let o: ObservedMesh;
  const samples: Record<string, Samples> = {};

  before(async () => {
    const good = Array.from({ length: N }, (_, i) => `host-${i}.corp.test`);
    o = await startObservedMesh(good);
    // Four at a time: the edge, relays and gateway each handle several envelopes at once.
    const results: string[] = [];
    for (let i = 0; i < good.length; i += 4) results.push(...(await Promise.all(good.slice(i, i + 4).map((n) => o.order(n)))));
    assert.deepEqual(results, good.map(() => 'valid'));
    for (let i = 0; i < J; i++) {
      const r = await o.client.post(o.client.dir.newOrder!, { identifiers: [{ type: 'dns', value: `edge-${i}.${DENIED_SUFFIX}` }] });
      assert.equal(r.status, 400, r.body);
    }
    for (let i = 0; i < M; i++) await o.sendEnvelope(`card-${i}.${DENIED_SUFFIX}`);
    await o.sendJunk(K);
    // Bounded wait until the refusals are back at the edge, relay-2 has dropped the junk and edge-b's
    // sweep has emptied its outbox count.
    const until = Date.now() + 15_000;
    for (;;) {
      for (const n of ['gw', 'relay-1', 'relay-2', 'edge-b']) samples[n] = await o.metrics(n);
      const settled =
        samples['relay-2']!.sum('ramesh_envelopes_rejected_total') === K &&
        samples['edge-b']!.sum('ramesh_results_received_total', { status: 'invalid' }) === M &&
        samples['edge-b']!.sum('ramesh_envelopes_in_flight') === 0 &&
        ['relay-2', 'edge-b'].every((n) => samples[n]!.sum('ramesh_envelopes_queued') === 0);
      if (settled || Date.now() > until) break;
      await new Promise((r) => setTimeout(r, 100));
    }
  });

  after(async () => {
    await o?.stop();
  });

  const count = (node: string, name: string, labels: Record<string, string> = {}) => samples[node]!.sum(name, labels);

  // [name, node, metric, labels, expected]
  const exact: Array<[string, string, string, Record<string, string>, number]> = [
    ['ok/relay-2 queue wait: one sample per message from edge-b (issued, refused, junk)', 'relay-2', 'ramesh_hop_queue_wait_seconds_count', { from: 'edge-b' }, N + M + K],
    ['ok/relay-2 forwarded every valid envelope', 'relay-2', 'ramesh_hop_processing_seconds_count', { outcome: 'forwarded' }, N + M],
    ['ok/relay-2 dropped the junk', 'relay-2', 'ramesh_hop_processing_seconds_count', { outcome: 'rejected' }, K],
    ['ok/relay-2 counts the junk by reason', 'relay-2', 'ramesh_envelopes_rejected_total', {}, K],
    ['ok/relay-2 junk with a bad signature', 'relay-2', 'ramesh_envelopes_rejected_total', { reason: 'bad-signature' }, 1],
    ['ok/relay-2 junk over envelope.maxBytes', 'relay-2', 'ramesh_envelopes_rejected_total', { reason: 'oversize' }, 1],
    ['ok/relay-2 refused nothing', 'relay-2', 'ramesh_requests_refused_total', {}, 0],
    ['ok/relay-1 queue wait from relay-2', 'relay-1', 'ramesh_hop_queue_wait_seconds_count', { from: 'relay-2' }, N + M],
    ['ok/relay-1 forwarded the allowed ones', 'relay-1', 'ramesh_hop_processing_seconds_count', { outcome: 'forwarded' }, N],
    ['ok/relay-1 refused by its layer', 'relay-1', 'ramesh_hop_processing_seconds_count', { outcome: 'refused' }, M],
    ['ok/relay-1 refusals by layer and reason', 'relay-1', 'ramesh_requests_refused_total', { layer: 'relay-1', reason: 'rejectedIdentifier' }, M],
    ['ok/relay-1 rejected nothing', 'relay-1', 'ramesh_envelopes_rejected_total', {}, 0],
    ['ok/gateway queue wait from relay-1 equals the issuances', 'gw', 'ramesh_hop_queue_wait_seconds_count', { from: 'relay-1' }, N],
    ['ok/gateway processing of issued envelopes equals the issuances', 'gw', 'ramesh_hop_processing_seconds_count', { outcome: 'issued' }, N],
    ['ok/gateway processing has no other outcome', 'gw', 'ramesh_hop_processing_seconds_count', {}, N],
    ['ok/gateway CA calls equal the issuances', 'gw', 'ramesh_cas_request_duration_seconds_count', { op: 'sign', outcome: 'ok' }, N],
    ['ok/gateway CA calls all succeeded', 'gw', 'ramesh_cas_errors_total', {}, 0],
    ['ok/gateway refused nothing', 'gw', 'ramesh_requests_refused_total', {}, 0],
    ['ok/edge end-to-end latency of the issuances', 'edge-b', 'ramesh_issuance_duration_seconds_count', { status: 'valid' }, N],
    ['ok/edge end-to-end latency: no order was refused upstream', 'edge-b', 'ramesh_issuance_duration_seconds_count', { status: 'invalid' }, 0],
    ['ok/edge results signed by the gateway', 'edge-b', 'ramesh_results_received_total', { status: 'valid', by: 'gw' }, N],
    ['ok/edge refusals signed by relay-1', 'edge-b', 'ramesh_results_received_total', { status: 'invalid', by: 'relay-1' }, M],
    ['ok/edge ACME newAccount', 'edge-b', 'ramesh_acme_requests_total', { endpoint: '/acme/new-account', method: 'POST', status: '201' }, 1],
    ['ok/edge ACME newOrder', 'edge-b', 'ramesh_acme_requests_total', { endpoint: '/acme/new-order', method: 'POST', status: '201' }, N],
    ['fail/edge ACME newOrder refused by the edge (relay-1 layer)', 'edge-b', 'ramesh_acme_requests_total', { endpoint: '/acme/new-order', method: 'POST', status: '400' }, J],
    ['ok/edge ACME challenge responses', 'edge-b', 'ramesh_acme_requests_total', { endpoint: '/acme/chall/:id', status: '200' }, N],
    ['ok/edge ACME finalize', 'edge-b', 'ramesh_acme_requests_total', { endpoint: '/acme/order/:id/finalize', status: '200' }, N],
    ['ok/edge ACME certificate downloads', 'edge-b', 'ramesh_acme_requests_total', { endpoint: '/acme/cert/:id', status: '200' }, N],
    ['ok/edge ACME: no request failed', 'edge-b', 'ramesh_acme_requests_total', { status: '500' }, 0],
    ['ok/edge outbox empty', 'edge-b', 'ramesh_envelopes_in_flight', {}, 0],
    ['ok/edge outbound stream empty', 'edge-b', 'ramesh_envelopes_queued', {}, 0],
    ['ok/relay-2 outbound stream empty', 'relay-2', 'ramesh_envelopes_queued', {}, 0],
    ['ok/relay-2 reads edge-b', 'relay-2', 'ramesh_link_up', { child: 'edge-b' }, 1],
    ['ok/gateway reads relay-1', 'gw', 'ramesh_link_up', { child: 'relay-1' }, 1],
  ];
  for (const [name, node, metric, labels, want] of exact) {
    test(name, () => {
      assert.equal(count(node, metric, labels), want, `${node} ${metric}${JSON.stringify(labels)}`);
    });
  }

  test('ok/every series names its node and role; every node is connected to NATS', () => {
    for (const [node, s] of Object.entries(samples)) {
      for (const x of s.all) assert.equal(x.labels.node, node, `${x.name} on ${node}`);
      assert.equal(s.sum('ramesh_nats_connected'), 1, node);
    }
  });

  test('ok/histogram +Inf buckets equal their counts (a sample for every observation)', () => {
    for (const [node, metric, labels, want] of [
      ['gw', 'ramesh_hop_queue_wait_seconds', { from: 'relay-1' }, N],
      ['gw', 'ramesh_hop_processing_seconds', { outcome: 'issued' }, N],
      ['edge-b', 'ramesh_issuance_duration_seconds', { status: 'valid' }, N],
    ] as const) {
      assert.equal(count(node, `${metric}_bucket`, { ...labels, le: '+Inf' }), want, `${node} ${metric}`);
      assert.ok(count(node, `${metric}_sum`, labels) > 0, `${node} ${metric}_sum`);
    }
  });

  test('fail/no series for roles that do not measure them (the edge has no hop histogram, relays no CA calls)', () => {
    assert.equal(samples['edge-b']!.find('ramesh_hop_queue_wait_seconds_count').length, 0);
    assert.equal(samples['relay-1']!.find('ramesh_cas_request_duration_seconds_count').length, 0);
    assert.equal(samples['gw']!.find('ramesh_envelopes_queued').length, 0);
  });

  test('ok/CA calls and a CA refusal are counted: one certificate revoked twice', async () => {
    const serial = leafSerial(o.certificates.get('host-0.corp.test')!);
    await o.sendRevoke(serial);
    const waitFor = async (ok: (gw: Samples) => boolean) => {
      const until = Date.now() + 15_000;
      for (;;) {
        const gw = await o.metrics('gw');
        if (ok(gw)) return gw;
        if (Date.now() > until) throw new Error(gw.all.filter((x) => x.name.startsWith('ramesh_cas')).map((x) => JSON.stringify(x)).join('\n'));
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    await waitFor((gw) => gw.sum('ramesh_hop_processing_seconds_count', { outcome: 'revoked' }) === 1);
    // A second revocation (another envelope id) reaches the CA, which answers alreadyRevoked (RFC 8555 §7.6).
    await o.sendRevoke(serial);
    const gw = await waitFor((x) => x.sum('ramesh_hop_processing_seconds_count', { outcome: 'refused' }) === 1);
    assert.equal(gw.sum('ramesh_cas_request_duration_seconds_count', { op: 'revoke', outcome: 'ok' }), 1);
    assert.equal(gw.sum('ramesh_cas_request_duration_seconds_count', { op: 'revoke', outcome: 'refused' }), 1);
    assert.equal(gw.sum('ramesh_cas_errors_total', { op: 'revoke', reason: 'alreadyRevoked' }), 1);
    assert.equal(gw.sum('ramesh_cas_errors_total'), 1);
    assert.equal(gw.sum('ramesh_requests_refused_total', { layer: 'cas', reason: 'alreadyRevoked' }), 1);
    assert.equal(gw.sum('ramesh_cas_request_duration_seconds_count', { op: 'sign', outcome: 'ok' }), N, 'signing unchanged');
  });

  test('ok/the gateway /status.json agrees with the metrics; per-hop p50/p99 reported', async (t) => {
    const s = JSON.parse(await httpGet(`${o.m.mesh.gateway!.httpUrl}/status.json`)) as MeshStatus;
    assert.deepEqual(s.nodes.map((n) => [n.id, n.health]).sort(), [['edge-b', 'ok'], ['gw', 'ok'], ['relay-1', 'ok'], ['relay-2', 'ok']]);
    const link = (c: string) => s.links.find((l) => l.child === c)!;
    // The two revocations of the test above travelled the same links.
    assert.equal(link('edge-b').wait!.count, N + M + K + 2);
    assert.equal(link('relay-2').wait!.count, N + M + 2);
    assert.equal(link('relay-1').wait!.count, N + 2, 'the issuances and the two revocations');
    for (const l of s.links) {
      assert.equal(l.health, 'ok', `${l.child}: ${l.reason}`);
      assert.equal(l.state, 'up');
      assert.equal(l.queued, 0);
    }
    assert.deepEqual(s.totals, { issued: N, refused: M + 1, rejected: K });
    const refusedHere = s.refusals.filter((r) => r.kind === 'refused' && r.node === 'relay-1');
    assert.equal(refusedHere.length, M);
    assert.deepEqual(s.refusals.filter((r) => r.node === 'gw').map((r) => [r.kind, r.layer, r.reason]), [['refused', 'cas', 'alreadyRevoked']]);
    for (const r of refusedHere) {
      assert.equal(r.layer, 'relay-1');
      assert.equal(r.reason, 'rejectedIdentifier');
      assert.match(r.envelopeId!, /^[0-9a-f-]{36}$/);
    }
    assert.equal(s.refusals.filter((r) => r.kind === 'rejected' && r.node === 'relay-2').length, K);
    const node = (id: string) => s.nodes.find((n) => n.id === id)!;
    assert.equal(node('edge-b').issuance!.count, N);
    assert.equal(node('gw').processing!.count, N + 2);
    const q = (x: { p50: number | null; p99: number | null; count: number } | null) => `p50 ${x?.p50} ms, p99 ${x?.p99} ms (${x?.count} samples)`;
    for (const l of s.links) t.diagnostic(`queue wait ${l.child} -> ${l.parent}: ${q(l.wait)}`);
    for (const n of s.nodes) t.diagnostic(`${n.role === 'edge' ? 'end to end' : 'processing'} at ${n.id}: ${q(n.role === 'edge' ? n.issuance : n.processing)}`);
  });
});
