import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { connect, type NatsConnection } from 'nats';
import { nodeConnectOptions } from '../../shared/bus/auth.js';
import { EnvelopeQueue } from '../../shared/bus/queue.js';
import { outStream, QUEUED_SINCE_HEADER, upSubject } from '../../shared/bus/subjects.js';
import { signEdgeEnvelope, type EdgePayload } from '../../shared/envelope/index.js';
import { createLogger } from '../../shared/logging/logger.js';
import { NodeStore } from '../../shared/store/index.js';
import { EdgeDriver } from '../harness/edge-driver.js';
import { startTestMesh, type NodeProcess, type TestMesh, type TestNode } from '../harness/mesh.js';
import { pemCerts } from '../harness/tools.js';

// The edge's end-to-end retransmit (EnvelopeQueue.resend) against real nats-servers and nodes: a copy
// whose answer was lost gets through again inside the streams' duplicate window (a new Nats-Msg-Id
// per copy), and a copy still waiting in a stream is neither sent twice nor piled up, at the edge nor
// at a relay whose own uplink is down. The test acts as the edge (EdgeDriver: its key, credentials, stream).

const silent = createLogger('test', {}, { level: 'silent' });

/** edge-a -> relay-1 -> gw; edge-a is the test (EdgeDriver), never started as a node. */
const NODES: TestNode[] = [
  { id: 'gw', role: 'gateway', dc: 'core' },
  { id: 'relay-1', role: 'relay', dc: 'dc-a', parent: 'gw' },
  { id: 'edge-a', role: 'edge', dc: 'dc-a', parent: 'relay-1' },
];

async function waitFor(what: string, cond: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The same request re-signed: same id and content, fresh nonce (what the edge does near exp). */
async function resigned(d: EdgeDriver, jws: string): Promise<string> {
  const p = JSON.parse(Buffer.from(jws.split('.')[1]!, 'base64url').toString('utf8')) as EdgePayload;
  return signEdgeEnvelope({ ...p, nonce: `${p.nonce}x` }, d.key);
}

/** A connection with `node`'s own credentials on its own server. */
const nodeConn = async (m: TestMesh, node: string) => connect({ servers: m.topology.natsUrl(node), ...(await nodeConnectOptions(m.topology, node)) });

/** The copy last stored in `node`'s outbound stream (to its parent). */
const waitingCopy = async (nc: NatsConnection, node: string, parent: string) =>
  (await nc.jetstreamManager()).streams.getMessage(outStream(node), { last_by_subj: upSubject(parent, node) });

/**
 * Starts the gateway (a process) and checks that the envelope `id` gets one valid answer, the relay's
 * stream drains, and the CA issued one certificate for it (its store read after the gateway is stopped).
 */
async function gatewayAnswersOnce(m: TestMesh, d: EdgeDriver, relayQueue: EnvelopeQueue, procs: NodeProcess[], id: string): Promise<void> {
  const gw = await m.spawnNode('gw');
  procs.push(gw);
  const [result] = await d.waitResults(id, 1);
  assert.equal(result!.status, 'valid');
  await waitFor('the relay stream is drained', async () => (await relayQueue.depth()) === 0);
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(d.results.get(id)!.length, 1, 'one answer');
  await gw.kill();
  const db = await NodeStore.open(m.topology.storeDir('gw'));
  try {
    const records = (await db.collection<{ requestId: string }>('cas-builtin-issued').values()).filter((r) => r.requestId === id);
    assert.equal(records.length, 1, 'one certificate at the CA');
  } finally {
    await db.close();
  }
}

describe('integration: a result lost on its way down', { timeout: 60_000 }, () => {
  let m: TestMesh;
  let d: EdgeDriver;
  before(async () => {
    m = await startTestMesh({
      nodes: NODES,
      external: ['edge-a'],
    });
    d = await EdgeDriver.open(m, 'edge-a');
  });
  after(async () => {
    await d?.close();
    await m?.stop();
  });

  test('ok/the retransmit inside the duplicate window is answered again with the same certificate, one CA call', async () => {
    const { id, jws } = await d.issueEnvelope(['lost.example.test']);
    const gw = m.mesh.gateway!;
    const issuedBefore = gw.issued;
    await d.send(id, jws);
    const [first] = await d.waitResults(id, 1);
    assert.equal(first!.status, 'valid');
    // The answer is "lost": the edge retransmits well inside the 2-minute duplicate window. Under the
    // envelope id as Nats-Msg-Id every stream would drop it; as a new copy it reaches the gateway.
    assert.equal(await d.queue.resend(jws, id, 2), 'sent');
    const results = await d.waitResults(id, 2);
    assert.equal(results[1]!.status, 'valid');
    assert.equal(pemCerts(results[1]!.certificate!)[0]!.serialNumber, pemCerts(first!.certificate!)[0]!.serialNumber, 'the stored certificate');
    assert.equal(gw.issued - issuedBefore, 1, 'one CA call');
  });

  test('fail/a JetStream redelivery of the same copy (same Nats-Msg-Id) is dropped as a duplicate', async () => {
    const { id, jws } = await d.issueEnvelope(['dup.example.test']);
    await d.send(id, jws);
    await d.waitResults(id, 1);
    assert.deepEqual(await d.queue.send(jws, id), { duplicate: true });
    await new Promise((r) => setTimeout(r, 1_000));
    assert.equal(d.results.get(id)!.length, 1, 'no second answer');
  });
});

describe('integration: copies waiting in streams are not piled up', { timeout: 90_000 }, () => {
  let m: TestMesh;
  let d: EdgeDriver;
  let relayConn: NatsConnection;
  let relayQueue: EnvelopeQueue;
  const procs: NodeProcess[] = [];
  before(async () => {
    m = await startTestMesh({
      nodes: NODES,
      // The relay and the gateway run as processes the test starts when it wants them.
      external: ['edge-a', 'relay-1', 'gw'],
    });
    d = await EdgeDriver.open(m, 'edge-a');
    // The relay's outbound stream, read with the relay's credentials.
    relayConn = await nodeConn(m, 'relay-1');
    relayQueue = await EnvelopeQueue.open(relayConn, m.topology, 'relay-1', { log: silent });
  });
  after(async () => {
    for (const p of procs) await p.kill();
    await relayConn?.close();
    await d?.close();
    await m?.stop();
  });

  test('ok/one copy per envelope at the edge and at a relay whose uplink is down; one certificate when it returns', async () => {
    const { id, jws } = await d.issueEnvelope(['queued.example.test']);
    await d.send(id, jws);
    assert.equal(await d.queue.depth(), 1);
    // Nobody reads the edge's stream: the copy waits, a retransmit sends nothing.
    assert.equal(await d.queue.resend(jws, id, 2), 'waiting');
    assert.equal(await d.queue.depth(), 1);
    // Re-signed near exp: the new copy replaces the old one in the stream.
    const jws2 = await resigned(d, jws);
    assert.equal(await d.queue.resend(jws2, id, 3), 'sent');
    assert.equal(await d.queue.depth(), 1, 'the older copy was removed');

    // The relay starts; its parent (the gateway) is not there: the copy moves to the relay's stream.
    procs.push(await m.spawnNode('relay-1'));
    await waitFor('the relay took the copy', async () => (await d.queue.depth()) === 0);
    assert.equal(await relayQueue.depth(), 1);
    const firstSeenAt = Date.now();
    // No answer comes (the gateway is away): the edge retransmits a new copy, which the relay forwards
    // in place of the one it still holds.
    assert.equal(await d.queue.resend(jws2, id, 4), 'sent');
    await waitFor('the relay took the second copy', async () => (await d.queue.depth()) === 0);
    assert.equal(await relayQueue.depth(), 1, 'one copy waits at the relay');
    // The copy that took the older one's place says since when the envelope waits there (queue-wait metric).
    const waiting = await waitingCopy(relayConn, 'relay-1', 'gw');
    assert.equal(waiting.header.get('Nats-Msg-Id'), `${id}~4`);
    const since = Number(waiting.header.get(QUEUED_SINCE_HEADER));
    assert.ok(since > 0 && since <= firstSeenAt, `queued since ${since}, first copy seen at ${firstSeenAt}`);

    await gatewayAnswersOnce(m, d, relayQueue, procs, id);
  });
});

describe('integration: copies waiting in streams are known again after a restart', { timeout: 90_000 }, () => {
  let m: TestMesh;
  let d: EdgeDriver;
  let relayConn: NatsConnection;
  let relayQueue: EnvelopeQueue;
  const conns: NatsConnection[] = [];
  const procs: NodeProcess[] = [];
  /** The edge's queue as a restarted edge opens it: a new connection, nothing remembered. */
  const restartedEdgeQueue = async () => {
    const nc = await nodeConn(m, 'edge-a');
    conns.push(nc);
    const q = await EnvelopeQueue.open(nc, m.topology, 'edge-a', { log: silent });
    await q.recovered();
    return q;
  };
  before(async () => {
    // Lone copies (bundles off): the copies of a bundle are the subject of test/integration/bundles.test.ts.
    m = await startTestMesh({ nodes: NODES, envelope: { bundle: { maxEnvelopes: 1, maxBytes: 262_144 } }, external: ['edge-a', 'relay-1', 'gw'] });
    d = await EdgeDriver.open(m, 'edge-a');
    relayConn = await nodeConn(m, 'relay-1');
    relayQueue = await EnvelopeQueue.open(relayConn, m.topology, 'relay-1', { log: silent });
  });
  after(async () => {
    for (const p of procs) await p.kill();
    for (const c of conns) await c.close();
    await relayConn?.close();
    await d?.close();
    await m?.stop();
  });

  test('ok/a restarted edge finds its waiting copies: a retransmit sends nothing, a re-signed copy replaces the old one', async () => {
    const waiting = await Promise.all(['r1.example.test', 'r2.example.test', 'r3.example.test'].map((n) => d.issueEnvelope([n])));
    for (const e of waiting) await d.send(e.id, e.jws);
    const firstStoredAt = (await waitingCopy(d.nc, 'edge-a', 'relay-1')).time.getTime();
    assert.equal(await d.queue.depth(), 3);

    const q = await restartedEdgeQueue();
    // Before the fix a restarted edge knew no copy and stored a second one of each.
    for (const e of waiting) assert.equal(await q.resend(e.jws, e.id, 2), 'waiting', e.id);
    assert.equal(await q.depth(), 3, 'no copy added');
    const jws2 = await resigned(d, waiting[2]!.jws);
    assert.equal(await q.resend(jws2, waiting[2]!.id, 3), 'sent');
    assert.equal(await q.depth(), 3, 'the older copy was removed');
    const copy = await waitingCopy(d.nc, 'edge-a', 'relay-1');
    assert.equal(copy.header.get('Nats-Msg-Id'), `${waiting[2]!.id}~3`);
    const since = Number(copy.header.get(QUEUED_SINCE_HEADER));
    assert.ok(since > 0 && since <= copy.time.getTime() && since >= firstStoredAt - 1_000, `waits since ${since} (first copy stored at ${firstStoredAt})`);
  });

  test('ok/a relay killed while holding a copy forwards the edge\'s next copy in its place; one certificate', async () => {
    // The copies of the first test go along (and are answered once the gateway starts).
    const { id, jws } = await d.issueEnvelope(['relay-restart.example.test']);
    await d.send(id, jws);
    let relay = await m.spawnNode('relay-1');
    procs.push(relay);
    await waitFor('the relay took the copies', async () => (await d.queue.depth()) === 0);
    const held = await relayQueue.depth();
    assert.ok(held >= 1, `the relay holds ${held}`);
    await relay.kill('SIGKILL');
    relay = await m.spawnNode('relay-1');
    procs.push(relay);
    // No answer came: the edge retransmits a new copy; the restarted relay replaces the one it holds.
    const jws2 = await resigned(d, jws);
    assert.equal(await d.queue.resend(jws2, id, 2), 'sent');
    await waitFor('the relay took the new copy', async () => (await d.queue.depth()) === 0);
    await waitFor('the relay forwarded it', async () => (await waitingCopy(relayConn, 'relay-1', 'gw')).header.get('Nats-Msg-Id') === `${id}~2`);
    assert.equal(await relayQueue.depth(), held, 'one copy per envelope waits at the relay');

    await gatewayAnswersOnce(m, d, relayQueue, procs, id);
  });
});
