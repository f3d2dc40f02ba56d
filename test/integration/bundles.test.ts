import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { connect } from 'nats';
import { startTestMesh, type NodeProcess, type TestMesh } from '../harness/mesh.js';
import { EdgeDriver } from '../harness/edge-driver.js';
import { nodeConnectOptions } from '../../shared/bus/auth.js';
import { ENVELOPE_ID_HEADER, ENVELOPE_IDS_HEADER, outStream, QUEUED_SINCE_HEADER } from '../../shared/bus/subjects.js';
import { NodeStore } from '../../shared/store/index.js';
import { signEdgeEnvelope, type EdgePayload, type ResultPayload } from '../../shared/envelope/index.js';

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
      // Its metrics say the same: messages and the requests they carried (ramesh_sent_requests).
      const text = await m.mesh.relays.get(relay)!.metrics.registry.metrics();
      const count = Number(/^ramesh_sent_requests_count\{[^}]*\} (\d+)$/m.exec(text)?.[1]);
      const sum = Number(/^ramesh_sent_requests_sum\{[^}]*\} (\d+)$/m.exec(text)?.[1]);
      assert.equal(sum, NAMES, `${relay}: every request sent once`);
      assert.equal(count, sizes.length, `${relay}: one message per hop record`);
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

async function waitFor(what: string, cond: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('integration: bundles waiting at a relay whose uplink is down', { timeout: 180_000 }, () => {
  // edge-a (the test) -> relay-1 (a process) -> gw (a process, started last: until then relay-1's uplink is down).
  let m: TestMesh;
  let d: EdgeDriver;
  const procs: NodeProcess[] = [];
  before(async () => {
    m = await startTestMesh({
      envelope: { bundle: { maxEnvelopes: 16, maxBytes: 262_144 } },
      nodes: [
        { id: 'gw', role: 'gateway', dc: 'core' },
        { id: 'relay-1', role: 'relay', dc: 'dc-a', parent: 'gw' },
        { id: 'edge-a', role: 'edge', dc: 'dc-a', parent: 'relay-1' },
      ],
      external: ['edge-a', 'relay-1', 'gw'],
    });
    d = await EdgeDriver.open(m, 'edge-a');
  });
  after(async () => {
    for (const p of procs) await p.kill();
    await d?.close();
    await m?.stop();
  });

  /**
   * Every message waiting in relay-1's outbound stream: its envelope copies ([envelope id, Nats-Msg-Id of
   * the copy]) and its Ra-Mesh-Queued-Since header (NaN when absent).
   */
  async function messages(): Promise<Array<{ copies: Array<[string, string]>; since: number }>> {
    const nc = await connect({ servers: m.topology.natsUrl('relay-1'), ...(await nodeConnectOptions(m.topology, 'relay-1')) });
    try {
      const jsm = await nc.jetstreamManager();
      const { state } = await jsm.streams.info(outStream('relay-1'));
      const out: Array<{ copies: Array<[string, string]>; since: number }> = [];
      for (let seq = state.first_seq; state.messages > 0 && seq <= state.last_seq; seq++) {
        const msg = await jsm.streams.getMessage(outStream('relay-1'), { seq }).catch(() => undefined);
        if (!msg) continue;
        const list = msg.header.get(ENVELOPE_IDS_HEADER);
        const copies = list ? list.split(',').map((p) => p.split('=') as [string, string]) : [[msg.header.get(ENVELOPE_ID_HEADER), msg.header.get('Nats-Msg-Id')] as [string, string]];
        out.push({ copies, since: Number(msg.header.get(QUEUED_SINCE_HEADER) || NaN) });
      }
      return out;
    } finally {
      await nc.close();
    }
  }
  /** Every envelope copy waiting in relay-1's outbound stream, per message. */
  const waiting = async () => (await messages()).map((x) => x.copies);
  /** Every waiting message says the envelopes in it have waited since the first copies came (queue-wait metric). */
  async function waitedSinceFirstCopies(from: number, to: number): Promise<void> {
    for (const { copies, since } of await messages()) {
      assert.ok(since >= from && since <= to, `a message of ${copies.length} waits since ${since}: the first copies came between ${from} and ${to}`);
    }
  }
  /** The same request re-signed (same id and content, fresh nonce), as an edge does before a retransmit. */
  const resigned = (jws: string) => {
    const p = JSON.parse(Buffer.from(jws.split('.')[1]!, 'base64url').toString('utf8')) as EdgePayload;
    return signEdgeEnvelope({ ...p, nonce: `${p.nonce}x` }, d.key);
  };
  /** One copy of each envelope waits, the copy of `attempt` (Nats-Msg-Id `<id>~<attempt>`). */
  async function oneCopyEach(ids: string[], attempt: number): Promise<boolean> {
    const copies = (await waiting()).flat();
    const want = new Map(ids.map((id) => [id, `${id}~${attempt}`]));
    return copies.length === ids.length && copies.every(([id, msgId]) => want.get(id) === msgId);
  }

  test('ok/every request of a held bundle retransmitted: the bundle is replaced, one copy of each waits, also after a restart; one certificate each', async () => {
    let relay = await m.spawnNode('relay-1');
    procs.push(relay);
    const envs = await Promise.all(Array.from({ length: 40 }, (_, i) => d.issueEnvelope([`held${i}.corp.test`])));
    const ids = envs.map((e) => e.id);
    const sentAt = Date.now();
    await Promise.all(envs.map((e) => d.send(e.id, e.jws)));
    await waitFor('the relay took every copy', async () => (await d.queue.depth()) === 0 && (await waiting()).flat().length === ids.length);
    const tookAt = Date.now();
    const first = await waiting();
    assert.ok(first.some((msg) => msg.length > 1), `some copies wait in bundles: ${first.map((x) => x.length).join(',')}`);

    // No answer comes (the gateway is away): the edge retransmits every one.
    for (const e of envs) assert.equal(await d.queue.resend(await resigned(e.jws), e.id, 2), 'sent');
    await waitFor('one copy of each waits at the relay (the bundles of the first copies are gone)', () => oneCopyEach(ids, 2));
    await waitedSinceFirstCopies(sentAt, tookAt);

    // A restarted relay reads the bundles' envelope lists back, and replaces them just the same.
    await relay.kill('SIGKILL');
    relay = await m.spawnNode('relay-1');
    procs.push(relay);
    for (const e of envs) assert.equal(await d.queue.resend(await resigned(e.jws), e.id, 3), 'sent');
    await waitFor('one copy of each waits after the restart', () => oneCopyEach(ids, 3));
    await waitedSinceFirstCopies(sentAt, tookAt);

    const gw = await m.spawnNode('gw');
    procs.push(gw);
    for (const id of ids) assert.equal((await d.waitResults(id, 1, 60_000))[0]!.status, 'valid');
    await waitFor('the relay stream is drained', async () => (await waiting()).length === 0);
    await new Promise((r) => setTimeout(r, 500));
    for (const id of ids) assert.equal(d.results.get(id)!.length, 1, `${id}: one answer`);
    await gw.kill();
    const db = await NodeStore.open(m.topology.storeDir('gw'));
    try {
      const issued = (await db.collection<{ requestId: string }>('cas-builtin-issued').values()).map((r) => r.requestId);
      for (const id of ids) assert.equal(issued.filter((x) => x === id).length, 1, `${id}: one certificate at the CA`);
    } finally {
      await db.close();
    }
  });
});
