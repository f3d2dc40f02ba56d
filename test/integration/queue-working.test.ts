import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { connect, type NatsConnection } from 'nats';
import { nodeConnectOptions } from '../../shared/bus/auth.js';
import { EnvelopeQueue, type MessageInfo } from '../../shared/bus/queue.js';
import { createLogger } from '../../shared/logging/logger.js';
import { EdgeDriver } from '../harness/edge-driver.js';
import { startTestMesh, type TestMesh } from '../harness/mesh.js';

// The envelope queue's in-progress acks (shared/bus/queue.ts keepWorking) against a real nats-server:
// a handler working longer than nats.queue.ackWait (1 s here) keeps its message from a second delivery
// while the node makes progress (also past ten times ackWait), a node that makes none for ten times
// ackWait lets the message go again, and a connection closed under a running handler neither crashes
// the node nor loses the message.
// edge-a (an EdgeDriver) publishes into its outbound stream; the test reads it as the gateway would,
// with the gateway's credentials and its own handler.

const silent = createLogger('test', {}, { level: 'silent' });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(50);
  }
}

/** A promise the test opens when it chooses (a handler held until then). */
function gate(): { held: Promise<void>; release: () => void } {
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  return { held, release };
}

describe('integration: a message handled for longer than ackWait', { timeout: 150_000 }, () => {
  let m: TestMesh;
  let d: EdgeDriver;
  const conns: NatsConnection[] = [];
  const queues: EnvelopeQueue[] = [];
  /** The gateway's side: a queue on a connection of its own, whose handler the test supplies. */
  async function reader(handler: (info: MessageInfo) => Promise<'ack'>): Promise<{ nc: NatsConnection; q: EnvelopeQueue }> {
    const nc = await connect({ servers: m.topology.natsUrl('gw'), ...(await nodeConnectOptions(m.topology, 'gw')) });
    conns.push(nc);
    const q = await EnvelopeQueue.open(nc, m.topology, 'gw', { log: silent });
    queues.push(q);
    q.consume((_data, info) => handler(info));
    return { nc, q };
  }

  /** Once the handler is done: no second delivery within ackWait and more, and the message left the edge's stream. */
  async function deliveredOnceAndAcked(seen: MessageInfo[], id: string): Promise<void> {
    await sleep(2_000);
    assert.equal(seen.length, 1, `delivered ${seen.length} times`);
    assert.equal(seen[0]!.envelopeId, id);
    assert.equal(seen[0]!.redelivered, false);
    assert.equal(await d.queue.depth(), 0, 'acked: gone from the edge stream');
  }

  before(async () => {
    m = await startTestMesh({
      nats: { queue: { ackWait: '1s' } },
      nodes: [
        { id: 'gw', role: 'gateway', dc: 'core' },
        { id: 'edge-a', role: 'edge', dc: 'dc-a', parent: 'gw' },
      ],
      external: ['gw', 'edge-a'],
    });
    d = await EdgeDriver.open(m, 'edge-a');
  });

  after(async () => {
    for (const q of queues) await q.stop().catch(() => undefined);
    for (const c of conns) await c.close().catch(() => undefined);
    await d?.close();
    await m?.stop();
  });

  test('ok/a handler taking 3.5 times ackWait: the message is delivered once and acked once', async () => {
    const seen: MessageInfo[] = [];
    let finished = 0;
    const { nc, q } = await reader(async (info) => {
      seen.push(info);
      await sleep(3_500);
      finished += 1;
      return 'ack';
    });
    const { id, jws } = await d.issueEnvelope(['slow.corp.test']);
    await d.send(id, jws);
    await until('the handler finished', () => finished === 1);
    // Longer than ackWait again: a redelivery, had the message not been acked, would show by now.
    await deliveredOnceAndAcked(seen, id);
    await q.stop();
    await nc.close();
  });

  test('ok/a handler reporting progress for 12 times ackWait (past the 10 without progress): delivered once, acked once', async () => {
    // A bundle behind a slow CA: the gateway answers one request after another (info.progress() each).
    const seen: MessageInfo[] = [];
    let finished = 0;
    const { nc, q } = await reader(async (info) => {
      seen.push(info);
      for (let i = 0; i < 24; i++) {
        await sleep(500);
        info.progress();
      }
      finished += 1;
      return 'ack';
    });
    const { id, jws } = await d.issueEnvelope(['progress.corp.test']);
    await d.send(id, jws);
    await until('the handler finished', () => finished === 1, 30_000);
    await deliveredOnceAndAcked(seen, id);
    await q.stop();
    await nc.close();
  });

  test('fail/a node that makes no progress for 10 times ackWait lets the message go: delivered again, then acked once', async () => {
    const { held, release } = gate();
    const seen: MessageInfo[] = [];
    const { nc, q } = await reader(async (info) => {
      seen.push(info);
      // The first delivery hangs (no progress); the second one is handled at once.
      if (seen.length === 1) await held;
      return 'ack';
    });
    const { id, jws } = await d.issueEnvelope(['stuck.corp.test']);
    const sentAt = Date.now();
    await d.send(id, jws);
    await until('delivered again', () => seen.length === 2, 30_000);
    const after = Date.now() - sentAt;
    // Kept for ten times ackWait (1 s) while nothing moved, then one ackWait until JetStream delivers again.
    assert.ok(after >= 10_000, `delivered again after ${after} ms`);
    assert.equal(seen[1]!.envelopeId, id);
    assert.equal(seen[1]!.redelivered, true);
    await until('acked', async () => (await d.queue.depth()) === 0);
    release();
    await sleep(500);
    assert.equal(seen.length, 2);
    await q.stop();
    await nc.close();
  });

  test('ok/the connection closes under a running handler: no crash, and the message comes again to the next reader', async () => {
    const { held, release } = gate();
    const first: MessageInfo[] = [];
    const { nc } = await reader(async (info) => {
      first.push(info);
      await held;
      return 'ack';
    });
    const { id, jws } = await d.issueEnvelope(['closed.corp.test']);
    await d.send(id, jws);
    await until('the first reader has it', () => first.length === 1);
    await nc.close();
    // In-progress acks (every third of ackWait) and the ack itself now meet a closed connection.
    await sleep(1_000);
    release();
    await sleep(200);
    const second: MessageInfo[] = [];
    await reader(async (info) => {
      second.push(info);
      return 'ack';
    });
    await until('the next reader got it again', () => second.some((i) => i.envelopeId === id));
    assert.equal(second.find((i) => i.envelopeId === id)!.redelivered, true);
    await until('acked by the next reader', async () => (await d.queue.depth()) === 0);
  });
});
