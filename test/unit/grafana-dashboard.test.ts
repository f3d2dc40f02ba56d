import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { describe, test } from 'node:test';
import { NodeMetrics } from '../../shared/metrics/node-metrics.js';

// deploy/grafana-dashboard.json charts the metrics the nodes export: every series name in a query is
// one the registries of edge, relay and gateway define (histograms with _bucket/_count/_sum), every
// label a query groups or filters by is a label of those series, and every ramesh_ family has a panel.

interface Panel {
  type: string;
  title: string;
  datasource?: { uid: string };
  targets?: Array<{ expr: string; refId: string }>;
  gridPos: { x: number; y: number; w: number; h: number };
}

const dashboard = JSON.parse(await readFile(new URL('../../deploy/grafana-dashboard.json', import.meta.url), 'utf8')) as {
  title: string;
  uid: string;
  schemaVersion: number;
  panels: Panel[];
  templating: { list: Array<{ name: string }> };
};

/** Every exported series name -> its labels (prom-client registries of the three roles). */
async function exported(): Promise<Map<string, Set<string>>> {
  const out = new Map<string, Set<string>>();
  for (const role of ['edge', 'relay', 'gateway']) {
    const m = new NodeMetrics(`n-${role}`, role);
    for (const metric of await m.registry.getMetricsAsJSON()) {
      const labels = new Set(['node', 'role', ...((m.registry.getSingleMetric(metric.name) as unknown as { labelNames?: string[] })?.labelNames ?? [])]);
      const names = metric.type === ('histogram' as never) ? ['_bucket', '_count', '_sum'].map((s) => metric.name + s) : [metric.name];
      for (const n of names) out.set(n, new Set([...(out.get(n) ?? []), ...labels, ...(n.endsWith('_bucket') ? ['le'] : [])]));
    }
  }
  return out;
}

const queries = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr })));

describe('unit: Grafana dashboard', () => {
  test('ok/a dashboard with a Prometheus datasource variable and a node variable', () => {
    assert.equal(dashboard.uid, 'ra-mesh-overview');
    assert.ok(dashboard.schemaVersion >= 36);
    assert.deepEqual(dashboard.templating.list.map((v) => v.name), ['datasource', 'node']);
    for (const p of dashboard.panels.filter((x) => x.type !== 'row')) assert.equal(p.datasource?.uid, '${datasource}', p.title);
    assert.ok(queries.length >= 20);
  });

  test('ok/panels do not overlap on the 24-column grid', () => {
    const cells = new Set<string>();
    for (const p of dashboard.panels) {
      const { x, y, w, h } = p.gridPos;
      assert.ok(x >= 0 && x + w <= 24, p.title);
      for (let i = x; i < x + w; i++) for (let j = y; j < y + h; j++) {
        assert.ok(!cells.has(`${i},${j}`), `${p.title} overlaps at ${i},${j}`);
        cells.add(`${i},${j}`);
      }
    }
  });

  test('ok/every series a query names is exported, with the labels the query uses', async () => {
    const known = await exported();
    for (const { panel, expr } of queries) {
      const names = [...expr.matchAll(/\b(ramesh_[a-z_]+)/g)].map((m) => m[1]!);
      assert.ok(names.length > 0, `${panel}: ${expr}`);
      const labels = new Set<string>();
      for (const n of names) {
        assert.ok(known.has(n), `${panel}: ${n} is not exported by any node`);
        for (const l of known.get(n)!) labels.add(l);
      }
      const used = [
        ...[...expr.matchAll(/by \(([^)]*)\)/g)].flatMap((m) => m[1]!.split(',').map((s) => s.trim())),
        ...[...expr.matchAll(/\{([^}]*)\}/g)].flatMap((m) => [...m[1]!.matchAll(/([a-z_]+)\s*(?:=~|!~|!=|=)/g)].map((x) => x[1]!)),
      ];
      for (const l of used) assert.ok(labels.has(l), `${panel}: label "${l}" is not a label of ${names.join(', ')}`);
    }
  });

  test('fail/no ramesh_ family is left out of the dashboard', async () => {
    const charted = new Set(queries.flatMap((q) => [...q.expr.matchAll(/\b(ramesh_[a-z_]+?)(?:_bucket|_count|_sum)?\b/g)].map((m) => m[1]!)));
    for (const role of ['edge', 'relay', 'gateway']) {
      for (const m of await new NodeMetrics('n', role).registry.getMetricsAsJSON()) assert.ok(charted.has(m.name), `${m.name} (${role}) has no panel`);
    }
  });
});
