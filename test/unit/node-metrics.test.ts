import assert from 'node:assert/strict';
import { test } from 'node:test';
import { NodeMetrics } from '../../shared/metrics/node-metrics.js';

// A node's process metrics (prom-client's defaults under the ramesh_ prefix). The event-loop delay is
// sampled every 100 ms (not 10 ms: an idle node would wake 100 times a second for it); a stall of the
// loop longer than that must still show.

async function value(m: NodeMetrics, name: string): Promise<number> {
  const metric = (await m.registry.getMetricsAsJSON()).find((x) => x.name === name);
  assert.ok(metric, `${name} is exported`);
  return Number((metric.values as Array<{ value: number }>)[0]!.value);
}

test('ok/process-metrics: a 400 ms stall of the event loop shows in ramesh_nodejs_eventloop_lag_max_seconds', async () => {
  const m = new NodeMetrics('n1', 'relay', { processMetrics: true });
  // Let the sampler take a few samples of an idle loop first.
  await new Promise((r) => setTimeout(r, 350));
  const until = Date.now() + 400;
  while (Date.now() < until) {
    /* the loop is blocked */
  }
  await new Promise((r) => setTimeout(r, 250));
  const max = await value(m, 'ramesh_nodejs_eventloop_lag_max_seconds');
  assert.ok(max >= 0.25, `max lag ${max}s after a 400 ms stall`);
  assert.ok((await value(m, 'ramesh_process_cpu_seconds_total')) > 0);
});

test('fail/no-process-metrics: without processMetrics a node exports none of them', async () => {
  const m = new NodeMetrics('n2', 'relay');
  const names = (await m.registry.getMetricsAsJSON()).map((x) => x.name);
  assert.ok(!names.some((n) => n.startsWith('ramesh_nodejs_') || n.startsWith('ramesh_process_')), names.join(', '));
});
