import assert from 'node:assert/strict';
import { access, mkdir } from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { httpGet } from '../harness/tools.js';
import { DENIED_SUFFIX, startObservedMesh, type ObservedMesh } from '../harness/observed-mesh.js';
import type { MeshStatus } from '../../services/gateway/status/mesh-status.js';

// The gateway's status page in real headless Chromium (Debian's, driven by playwright-core; no browser
// is downloaded) against a running mesh: every node, data center, segment and link is drawn, each
// link labelled with the p50/p99 queue wait that /status.json reports; it updates live without a
// reload, and turns a link red while a data center's NATS server is down. Screenshots go to
// test-artifacts/.

const CHROMIUM = process.env.RA_MESH_CHROMIUM ?? '/usr/bin/chromium';
// node.md: as root, without the background-networking flags Chromium keeps dialling out.
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const ARTIFACTS = new URL('../../test-artifacts/', import.meta.url);

const N = 6;
const M = 2;
const K = 2;

describe('e2e: the gateway status page in headless Chromium', { timeout: 240_000 }, () => {
  let o: ObservedMesh;
  let browser: Browser;
  let page: Page;
  let base: string;
  const status = async () => JSON.parse(await httpGet(`${base}/status.json`)) as MeshStatus;

  /** Polls /status.json (bounded) until `done` holds. */
  async function until(done: (s: MeshStatus) => boolean, what: string, timeoutMs = 20_000): Promise<MeshStatus> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const s = await status();
      if (done(s)) return s;
      if (Date.now() > end) throw new Error(`${what} not seen within ${timeoutMs} ms: ${JSON.stringify({ nodes: s.nodes, links: s.links, totals: s.totals })}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  before(async () => {
    await access(CHROMIUM).catch(() => {
      throw new Error(`${CHROMIUM} not found: install Debian's chromium (test/run-all.sh does) or set RA_MESH_CHROMIUM`);
    });
    const names = Array.from({ length: N + 2 }, (_, i) => `web-${i}.corp.test`);
    o = await startObservedMesh(names);
    base = o.m.mesh.gateway!.httpUrl!;
    for (const n of names.slice(0, N)) assert.equal(await o.order(n), 'valid');
    for (let i = 0; i < M; i++) await o.sendEnvelope(`pay-${i}.${DENIED_SUFFIX}`);
    await o.sendJunk(K);
    await until((s) => s.totals.issued === N && s.totals.refused === M && s.totals.rejected === K, 'the sequence');
    await mkdir(ARTIFACTS, { recursive: true });
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
    page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  });

  after(async () => {
    await browser?.close();
    await o?.stop();
  });

  test('ok/every node, data center, segment and link is drawn with the p50/p99 of /status.json', async () => {
    const res = await page.goto(`${base}/status`);
    assert.equal(res?.status(), 200);
    await page.waitForSelector('[data-node="edge-b"]', { timeout: 10_000 });
    const s = await status();
    for (const n of s.nodes) {
      const g = page.locator(`[data-node="${n.id}"]`);
      assert.equal(await g.count(), 1, n.id);
      assert.equal(await g.getAttribute('data-health'), 'ok', `${n.id}: ${n.reason}`);
      assert.equal(await g.locator('text.id').textContent(), n.id);
      assert.equal(await g.locator('text.stat').textContent(), n.label);
      assert.match(n.label, n.role === 'edge' ? /^e2e p50 \d+ms \/ p99 \d+ms$/ : /^proc p50 \d+ms \/ p99 \d+ms$/);
    }
    assert.deepEqual(await page.locator('[data-dc]').evaluateAll((els) => els.map((e) => e.getAttribute('data-dc'))), ['core', 'dc-a', 'dc-b']);
    assert.equal(await page.locator('[data-segment="seg-b"]').count(), 1);
    assert.equal(s.links.length, 3);
    for (const l of s.links) {
      const g = page.locator(`[data-link="${l.child}->${l.parent}"]`);
      assert.equal(await g.getAttribute('data-health'), 'ok', `${l.child}: ${l.reason}`);
      assert.match(l.label, /^p50 \d+ms \/ p99 \d+ms$/);
      assert.equal(await g.locator('text.label').textContent(), l.label);
      assert.equal(await g.locator('text.queue').textContent(), 'queued 0');
      assert.equal(await page.locator(`[data-link-row="${l.child}->${l.parent}"] td.wait`).textContent(), l.label);
    }
    assert.equal(await page.locator('#total-issued').textContent(), String(N));
    // Recent refusals: relay-1's layer (with the envelope ids) and relay-2's rejected junk.
    const rows = await page.locator('tr.refusal').allTextContents();
    assert.equal(rows.length, M + K);
    assert.equal(rows.filter((r) => /relay-1refusedrelay-1rejectedIdentifier[0-9a-f-]{36}/.test(r)).length, M);
    assert.equal(rows.filter((r) => /relay-2rejectedrelay-2/.test(r)).length, K);
    await page.screenshot({ path: new URL('status-page.png', ARTIFACTS).pathname, fullPage: true });
  });

  test('ok/the page updates live: a new issuance shows without a reload', async () => {
    const loaded = await page.evaluate(() => performance.timeOrigin);
    assert.equal(await o.order(`web-${N}.corp.test`), 'valid');
    await page.waitForFunction(`document.getElementById('total-issued')?.textContent === '${N + 1}'`, undefined, { timeout: 10_000 });
    assert.equal(await page.evaluate(() => performance.timeOrigin), loaded, 'same document, no reload');
  });

  test('fail/a data center whose NATS server is down turns its links red and shows the queued envelope; it heals', async () => {
    const dcA = o.m.bus.server('dc-a');
    const OUTAGE_MS = 1_500;
    let queuedSince = 0;
    let backAt = 0;
    await dcA.stop();
    try {
      // relay-1 (dc-a) lost its server: the gateway cannot read its stream, relay-2's envelopes wait in dc-b.
      await page.waitForSelector('[data-link="relay-1->gw"][data-health="down"]', { timeout: 20_000 });
      await page.waitForSelector('[data-link="relay-2->relay-1"][data-health="down"]', { timeout: 20_000 });
      const name = `web-${N + 1}.corp.test`;
      const pending = o.order(name);
      await page.waitForFunction(`document.querySelector('[data-link="relay-2->relay-1"] text.queue')?.textContent === 'queued 1'`, undefined, { timeout: 20_000 });
      // The envelope is in relay-2's stream since before now; it waits there at least until dc-a is back.
      queuedSince = Date.now();
      assert.equal(await page.locator('[data-node="relay-1"]').getAttribute('data-health'), 'down');
      await page.screenshot({ path: new URL('status-page-outage.png', ARTIFACTS).pathname, fullPage: true });
      // Keep the outage at least OUTAGE_MS long, so that the wait it leaves is over the warn threshold.
      await new Promise((r) => setTimeout(r, Math.max(0, queuedSince + OUTAGE_MS - Date.now())));
      await dcA.restart();
      backAt = Date.now();
      assert.equal(await pending, 'valid');
    } finally {
      if (!dcA.running) await dcA.restart();
    }
    await page.waitForFunction(`document.getElementById('total-issued')?.textContent === '${N + 2}'`, undefined, { timeout: 30_000 });
    for (const l of ['relay-1->gw', 'edge-b->relay-2']) await page.waitForSelector(`[data-link="${l}"][data-health="ok"]`, { timeout: 20_000 });
    // The envelope that waited out the outage in relay-2's stream stays in the recent p99 (5 minutes): warn.
    await page.waitForSelector('[data-link="relay-2->relay-1"][data-health="warn"]', { timeout: 20_000 });
    const healed = (await status()).links.find((l) => l.child === 'relay-2')!;
    assert.match(healed.reason!, /^p99 queue wait \d+ ms$/);
    assert.ok(healed.wait!.max! >= backAt - queuedSince && backAt - queuedSince >= OUTAGE_MS, `${JSON.stringify(healed.wait)} outage ${backAt - queuedSince} ms`);
    assert.equal(await page.locator('[data-node="relay-1"]').getAttribute('data-health'), 'ok');
    await page.screenshot({ path: new URL('status-page-healed.png', ARTIFACTS).pathname, fullPage: true });
  });
});
