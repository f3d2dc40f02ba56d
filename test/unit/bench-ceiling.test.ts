import assert from 'node:assert/strict';
import { test } from 'node:test';
import { oneInFlightCeiling } from '../bench/lib/stats.js';

// The throughput benchmark's derived ceiling of depth 4 / depth 1 at one in flight: (G + h) / (G + 4h).
const cases: Array<{ name: string; gatewayOnlyPerSec: number; rawMs: number; ceiling: number; hopForTargetMs: number }> = [
  // 2026-12-07's full run: a gateway-only round trip of 3.66 ms, a raw request/reply of 0.82 ms.
  { name: 'ok/the figures of a full run on the 2-core machine', gatewayOnlyPerSec: 1000 / 3.66, rawMs: 0.82, ceiling: 0.645, hopForTargetMs: 0.61 },
  // A hop of exactly G / 6 gives the target itself.
  { name: 'ok/a hop of a sixth of the gateway-only round trip reaches 0.70', gatewayOnlyPerSec: 100, rawMs: 10 / 6, ceiling: 0.7, hopForTargetMs: 10 / 6 },
  // A free hop changes nothing: the ratio is 1.
  { name: 'ok/a hop of no time keeps the ratio at 1', gatewayOnlyPerSec: 250, rawMs: 0, ceiling: 1, hopForTargetMs: 4 / 6 },
  // A CA call of 40 ms (a remote CA service) leaves room for hops of 6.7 ms.
  { name: 'ok/a slow CA leaves room for long hops', gatewayOnlyPerSec: 25, rawMs: 0.82, ceiling: 0.943, hopForTargetMs: 40 / 6 },
];

for (const c of cases) {
  test(c.name, () => {
    const r = oneInFlightCeiling(c.gatewayOnlyPerSec, c.rawMs);
    assert.ok(Math.abs(r.ceiling - c.ceiling) < 0.001, `ceiling ${r.ceiling} != ${c.ceiling}`);
    assert.ok(Math.abs(r.hopForTargetMs - c.hopForTargetMs) < 0.001, `hop ${r.hopForTargetMs} != ${c.hopForTargetMs}`);
  });
}
