import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { stringify } from 'yaml';
import { parseTopology } from '../../shared/config/index.js';
import { LatencyWindow, nearestRank } from '../../shared/metrics/latency-window.js';
import { NodeMetrics } from '../../shared/metrics/node-metrics.js';
import type { NodeStatus } from '../../shared/metrics/node-status.js';
import { formatMs, formatQuantiles } from '../../services/gateway/status/format.js';
import { layoutTopology, NODE_H, NODE_W } from '../../services/gateway/status/layout.js';
import { buildMeshStatus, linkHealth, nodeHealth, nodeStatusUrl } from '../../services/gateway/status/mesh-status.js';
import { statusPageHtml } from '../../services/gateway/status/status-page.js';
import { freePort } from '../harness/ports.js';
import { parseMetrics } from '../harness/observed-mesh.js';

function status(over: Partial<NodeStatus> = {}): NodeStatus {
  return {
    v: 1,
    node: 'n',
    role: 'relay',
    at: Date.now(),
    startedAt: Date.now(),
    nats: { state: 'connected', reconnects: 0 },
    inFlight: 0,
    queued: 0,
    links: [],
    wait: {},
    processing: { count: 0, p50: null, p99: null, max: null },
    issuance: null,
    counts: { processed: {}, rejected: {}, refused: {} },
    refusals: [],
    ...over,
  };
}
const up = { child: 'c', state: 'up' as const, failures: 0, lastOkAt: 1, lastError: null };
const wait = (p99: number) => ({ count: 10, p50: 1, p99, max: p99 });

describe('unit: mesh status', () => {
  const linkCases: Array<[string, Parameters<typeof linkHealth>, string, RegExp | null]> = [
    ['ok/both ends fine', [status({ node: 'c' }), status({ node: 'p', links: [up] }), up, wait(20)], 'ok', null],
    ['ok/a child without a status listener, read fine by its parent', [undefined, status({ node: 'p' }), up, wait(20), true], 'ok', null],
    ['fail/the parent cannot read the stream any more', [status({ node: 'c' }), status({ node: 'p' }), { ...up, state: 'down', failures: 3, lastError: '503' }, null], 'down', /cannot read the stream: 503/],
    ['fail/the parent never read it after many tries', [status({ node: 'c' }), status({ node: 'p' }), { ...up, state: 'connecting', failures: 9, lastOkAt: null, lastError: 'stream not found' }, null], 'down', /never read the stream: stream not found/],
    ['fail/the parent is still connecting', [status({ node: 'c' }), status({ node: 'p' }), { ...up, state: 'connecting', failures: 1, lastOkAt: null }, null], 'warn', /connecting/],
    ['fail/the child lost NATS', [status({ node: 'c', nats: { state: 'reconnecting', reconnects: 0 } }), status({ node: 'p' }), up, null], 'down', /c: NATS reconnecting/],
    ['fail/the parent lost NATS', [status({ node: 'c' }), status({ node: 'p', nats: { state: 'disconnected', reconnects: 0 } }), up, null], 'down', /p: NATS disconnected/],
    ['fail/envelopes pile up in the child', [status({ node: 'c', queued: 25 }), status({ node: 'p' }), up, wait(20)], 'warn', /25 envelopes queued/],
    ['fail/slow queue wait', [status({ node: 'c' }), status({ node: 'p' }), up, wait(4_200)], 'warn', /p99 queue wait 4200 ms/],
    ['fail/no parent status', [status({ node: 'c' }), undefined, undefined, null], 'unknown', /parent's status/],
    ['fail/the parent does not read this child', [status({ node: 'c' }), status({ node: 'p' }), undefined, null], 'unknown', /does not read/],
    ['fail/child status unreachable', [undefined, status({ node: 'p' }), up, wait(5)], 'warn', /child's status is not reachable/],
  ];
  for (const [name, args, health, reason] of linkCases) {
    test(`link ${name}`, () => {
      const [h, r] = linkHealth(...args);
      assert.equal(h, health);
      if (reason) assert.match(r!, reason);
      else assert.equal(r, null);
    });
  }

  const nodeCases: Array<[string, Parameters<typeof nodeHealth>[0], string]> = [
    ['ok/answers and is connected', { ok: true, status: status() }, 'ok'],
    ['fail/no metrics listener', undefined, 'unknown'],
    ['fail/not reachable', { ok: false, error: 'ECONNREFUSED' }, 'down'],
    ['fail/NATS closed', { ok: true, status: status({ nats: { state: 'closed', reconnects: 2 } }) }, 'down'],
    ['fail/queue building up', { ok: true, status: status({ queued: 10 }) }, 'warn'],
  ];
  for (const [name, f, health] of nodeCases) test(`node ${name}`, () => assert.equal(nodeHealth(f)[0], health));

  const fmt: Array<[number | null, string]> = [[null, '-'], [0, '0ms'], [0.4, '0ms'], [7.6, '8ms'], [999, '999ms'], [1_000, '1.0s'], [59_940, '59.9s'], [90_000, '1.5m'], [7_200_000, '2.0h']];
  for (const [ms, want] of fmt) test(`ok/formatMs(${ms}) = ${want}`, () => assert.equal(formatMs(ms), want));
  test('ok/formatQuantiles', () => {
    assert.equal(formatQuantiles({ count: 3, p50: 2, p99: 1500, max: 1500 }), 'p50 2ms / p99 1.5s');
    assert.equal(formatQuantiles({ count: 0, p50: null, p99: null, max: null }), 'no samples');
  });

  test('ok/latency window: nearest-rank p50/p99, old samples age out, the ring keeps the last ones', () => {
    const w = new LatencyWindow(100, 1_000);
    for (let i = 1; i <= 100; i++) w.add(i, 10_000);
    assert.deepEqual(w.summary(10_000), { count: 100, p50: 50, p99: 99, max: 100 });
    assert.equal(w.summary(11_001).count, 0);
    for (let i = 1; i <= 50; i++) w.add(1_000 + i, 20_000);
    const s = w.summary(20_000);
    assert.equal(s.count, 50, 'the 100 older samples are past maxAge');
    assert.equal(s.p50, 1_025);
    assert.equal(nearestRank([5], 0.99), 5);
  });

  test('ok/node status URL of a metrics listener (wildcards asked on loopback)', () => {
    assert.equal(nodeStatusUrl('127.0.0.1:9100'), 'http://127.0.0.1:9100/node-status');
    assert.equal(nodeStatusUrl('0.0.0.0:9100'), 'http://127.0.0.1:9100/node-status');
    assert.equal(nodeStatusUrl('[::]:9100'), 'http://[::1]:9100/node-status');
  });

  test('ok/layout of a wide mesh: every node placed, no two node boxes or segment boxes overlap, dcs are columns', () => {
    const nodes: Array<Record<string, unknown>> = [{ id: 'gw', role: 'gateway', dc: 'core' }];
    for (let r = 0; r < 6; r++) {
      nodes.push({ id: `relay-${r}`, role: 'relay', dc: `dc-${r % 3}`, parent: 'gw' });
      nodes.push({ id: `relay-${r}-x`, role: 'relay', dc: `dc-${r % 3}`, parent: `relay-${r}` });
      for (let e = 0; e < 8; e++) nodes.push({ id: `edge-${r}-${e}`, role: 'edge', dc: `dc-${r % 3}`, segment: `seg-${e % 3}`, parent: e % 2 ? `relay-${r}` : `relay-${r}-x`, acme: { listen: `127.0.0.1:${20000 + r * 10 + e}` } });
    }
    const t = parseTopology(stringify({ mesh: 'wide', nats: { hub: 'nats://127.0.0.1:4222' }, nodes }));
    const l = layoutTopology(t);
    assert.equal(Object.keys(l.nodes).length, nodes.length);
    const boxes = Object.entries(l.nodes).map(([id, p]) => ({ id, x: p.x - NODE_W / 2, y: p.y - NODE_H / 2, w: NODE_W, h: NODE_H }));
    const overlap = (a: { x: number; y: number; w: number; h: number }, b: typeof a) => a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
    for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) assert.ok(!overlap(boxes[i]!, boxes[j]!), `${boxes[i]!.id} / ${boxes[j]!.id}`);
    for (let i = 0; i < l.segments.length; i++) for (let j = i + 1; j < l.segments.length; j++) assert.ok(!overlap(l.segments[i]!, l.segments[j]!), `segments ${i} / ${j}`);
    assert.deepEqual(l.dcs.map((d) => d.dc), ['core', 'dc-0', 'dc-1', 'dc-2']);
    for (const n of t.nodes) {
      const dc = l.dcs.find((d) => d.dc === n.dc)!;
      const p = l.nodes[n.id]!;
      assert.ok(p.x - NODE_W / 2 >= dc.x && p.x + NODE_W / 2 <= dc.x + dc.w, `${n.id} inside its dc column`);
      assert.ok(p.x + NODE_W / 2 <= l.width && p.y + NODE_H / 2 <= l.height, `${n.id} inside the picture`);
      if (n.segment) assert.ok(l.segments.some((s) => s.segment === n.segment && p.x > s.x && p.x < s.x + s.w && p.y > s.y && p.y < s.y + s.h), `${n.id} inside a box of ${n.segment}`);
    }
    // Depth rows: children below their parents.
    for (const n of t.nodes) if (n.parent) assert.ok(l.nodes[n.id]!.y > l.nodes[n.parent]!.y, n.id);
  });

  test('ok/mesh status totals and links from what the nodes answered', () => {
    const t = parseTopology(
      stringify({
        mesh: 'm',
        nats: { hub: 'nats://127.0.0.1:4222' },
        nodes: [
          { id: 'gw', role: 'gateway', dc: 'core' },
          { id: 'r', role: 'relay', dc: 'a', parent: 'gw', metrics: '127.0.0.1:9101' },
          { id: 'e', role: 'edge', dc: 'a', parent: 'r', acme: { listen: '127.0.0.1:9443' } },
        ],
      }),
    );
    const fetched = new Map([
      ['gw', { ok: true as const, status: status({ node: 'gw', role: 'gateway', links: [{ ...up, child: 'r' }], wait: { r: wait(30) }, counts: { processed: { issued: 7, refused: 1 }, rejected: { malformed: 2 }, refused: { 'gw/badCSR': 1 } } }) }],
      ['r', { ok: false as const, error: 'ECONNREFUSED' }],
      ['e', undefined],
    ]);
    const s = buildMeshStatus(t, 'gw', fetched, { refreshMs: 1000, refusals: 10 });
    assert.deepEqual(s.totals, { issued: 7, refused: 1, rejected: 2 });
    assert.deepEqual(s.nodes.map((n) => [n.id, n.health, n.label]), [['gw', 'ok', 'proc no samples'], ['r', 'down', 'not reachable'], ['e', 'unknown', 'no status listener']]);
    const rl = s.links.find((l) => l.child === 'r')!;
    assert.deepEqual([rl.health, rl.state, rl.label], ['warn', 'up', 'p50 1ms / p99 30ms']);
    assert.deepEqual(s.links.find((l) => l.child === 'e')!.health, 'unknown');
  });

  test('ok/the status page is one self-contained document (no external script, style or font)', () => {
    const html = statusPageHtml({ title: 'ra-mesh <x>' });
    assert.match(html, /^<!doctype html>/);
    assert.ok(!/<script[^>]+src=|<link[^>]+href=|@import|https?:\/\//.test(html.replace('http://www.w3.org/2000/svg', '')), 'no external resources');
    assert.match(html, /fetch\('status\.json'/);
    assert.match(html, /<title>ra-mesh x<\/title>/);
  });

  test('ok/node metrics: /node-status and /metrics on the listener; a hanging queue source does not hold them', async () => {
    const m = new NodeMetrics('relay-x', 'relay');
    m.bind({ queued: () => new Promise(() => undefined), inFlight: () => 3, links: () => [{ ...up, child: 'edge-y' }] });
    m.received('edge-y', 12);
    m.received('edge-y', 40);
    m.hopDone('forwarded', Date.now() - 5);
    m.hopDone('rejected', Date.now());
    m.rejected('bad-signature', 'id-1');
    m.refused('relay-x', 'urn:ietf:params:acme:error:rejectedIdentifier', 'id-2', 'refused by policy layer relay-x');
    const srv = await m.serve(`127.0.0.1:${await freePort()}`);
    try {
      const started = Date.now();
      const s = (await (await fetch(srv.url.replace('/metrics', '/node-status'))).json()) as NodeStatus;
      assert.ok(Date.now() - started < 1_500, 'answered without waiting for the queue');
      assert.equal(s.queued, null);
      assert.equal(s.inFlight, 3);
      assert.deepEqual(s.wait['edge-y'], { count: 2, p50: 12, p99: 40, max: 40 });
      assert.equal(s.processing.count, 1, 'rejected junk is not hop latency');
      assert.deepEqual(s.counts, { processed: { forwarded: 1, rejected: 1 }, rejected: { 'bad-signature': 1 }, refused: { 'relay-x/rejectedIdentifier': 1 } });
      assert.deepEqual(s.refusals.map((r) => [r.kind, r.reason, r.envelopeId]), [['refused', 'rejectedIdentifier', 'id-2'], ['rejected', 'bad-signature', 'id-1']]);
      const text = parseMetrics(await (await fetch(srv.url)).text());
      assert.deepEqual(text.find('ramesh_envelopes_queued').map((x) => [x.labels, x.value]), [[{ node: 'relay-x', role: 'relay' }, -1]]);
      assert.deepEqual(text.find('ramesh_link_up').map((x) => [x.labels, x.value]), [[{ child: 'edge-y', node: 'relay-x', role: 'relay' }, 1]]);
      assert.equal(text.sum('ramesh_hop_queue_wait_seconds_count', { from: 'edge-y', node: 'relay-x' }), 2);
      assert.equal((await fetch(srv.url.replace('/metrics', '/other'))).status, 404);
    } finally {
      await srv.close();
    }
  });
});
