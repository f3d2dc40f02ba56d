import { createHash } from 'node:crypto';
import { bundleEnvelopes, wrapEnvelope, type NodeKey } from '../../shared/envelope/index.js';

// A relay's way up, by group commit: one message is being stored by the relay's own server at a time;
// whatever becomes ready meanwhile goes next, under one countersignature (a bundle layer). With one
// request in flight nothing waits and nothing is bundled: each goes alone, wrapped as a relay layer.
// Under load the cost of a hop (a JetStream message each way, a signature) is paid once per bundle.

/** One received message to forward: the JWS as it came, and what this relay excluded from it. */
export interface OutboundItem {
  jws: string;
  /** The request's id, or the received bundle's (the bus header). */
  id: string;
  /** The Nats-Msg-Id it came with. */
  msgId: string;
  /** When this relay received it (ms epoch): the hop record of a bundle takes the earliest. */
  recvAt: number;
  /** Requests inside it this relay refused or rejected and answered. */
  exclude: string[];
  /** The requests it carries on (refused and rejected ones left out). */
  ids: string[];
  /** How many requests it holds (counted against bundle.maxEnvelopes). */
  requests: number;
  /** True when it is a bundle (which only a bundle layer carries on: a relay layer holds one envelope's size). */
  bundled: boolean;
}

export interface BundlerOptions {
  key: NodeKey;
  /** The relay's policy label for hop records. */
  policy: string;
  ttlMs: number;
  maxEnvelopes: number;
  maxBytes: number;
  /** Stores one message in the outbound stream (resolves on the server's PubAck). */
  send: (jws: string, envelopeId: string, msgId: string) => Promise<unknown>;
  /** Stores a bundle: its Nats-Msg-Id, and each request with the Nats-Msg-Id of the copy that brought it. */
  sendBundle: (jws: string, msgId: string, copies: Array<{ id: string; msgId: string }>) => Promise<unknown>;
  /** Told of every message stored: how many requests it carries on (metrics). */
  sent?: (requests: number) => void;
}

interface Waiting {
  item: OutboundItem;
  resolve: () => void;
  reject: (e: unknown) => void;
}

/** A bundle's size: its JSON (each item a string, its exclusions, the layer's own members) in base64url. */
const B64 = 4 / 3;
const BUNDLE_OVERHEAD = 1024;
const PER_ITEM = 3;
const PER_EXCLUDE = 39;

export class Bundler {
  #waiting: Waiting[] = [];
  #sending = false;

  constructor(private readonly o: BundlerOptions) {}

  /** Resolves once the item is stored in the outbound stream (alone or in a bundle); rejects if that failed. */
  forward(item: OutboundItem): Promise<void> {
    // Bundles off: every message goes at once, as many stored at a time as arrive.
    if (this.o.maxEnvelopes <= 1) return this.#send([item]);
    return new Promise<void>((resolve, reject) => {
      this.#waiting.push({ item, resolve, reject });
      if (!this.#sending) void this.#drain();
    });
  }

  async #drain(): Promise<void> {
    this.#sending = true;
    try {
      while (this.#waiting.length > 0) {
        const group = this.#take();
        try {
          await this.#send(group.map((g) => g.item));
          for (const g of group) g.resolve();
        } catch (e) {
          for (const g of group) g.reject(e);
        }
      }
    } finally {
      this.#sending = false;
    }
  }

  /** The next group, in arrival order, within the request count and byte bounds (at least one item). */
  #take(): Waiting[] {
    let requests = 0;
    let bytes = BUNDLE_OVERHEAD;
    let n = 0;
    for (const w of this.#waiting) {
      const size = w.item.jws.length + PER_ITEM + w.item.exclude.length * PER_EXCLUDE;
      if (n > 0 && (requests + w.item.requests > this.o.maxEnvelopes || (bytes + size) * B64 > this.o.maxBytes)) break;
      requests += w.item.requests;
      bytes += size;
      n++;
    }
    return this.#waiting.splice(0, n);
  }

  async #send(items: OutboundItem[]): Promise<void> {
    const { key, policy, ttlMs } = this.o;
    const only = items.length === 1 ? items[0]! : undefined;
    if (only && !only.bundled && only.exclude.length === 0) {
      const jws = await wrapEnvelope(only.jws, { node: key.kid, recvAt: only.recvAt, policy, decision: 'allow' }, key, { ttlMs });
      // Forwarded under the Nats-Msg-Id it came with: a JetStream redelivery of this copy is a
      // duplicate upstream, an edge's retransmit (a new copy) is not.
      await this.o.send(jws, only.id, only.msgId);
      this.o.sent?.(only.ids.length);
      return;
    }
    const recvAt = Math.min(...items.map((i) => i.recvAt));
    const exclude = items.flatMap((i) => i.exclude);
    const jws = await bundleEnvelopes(
      items.map((i) => i.jws),
      { node: key.kid, recvAt, policy, decision: 'allow' },
      key,
      { ttlMs, exclude },
    );
    // The same items again (a redelivery after a failed send) are the same copy upstream.
    const h = createHash('sha256');
    for (const i of items) h.update(i.msgId).update('\n');
    const msgId = `bundle-${h.digest('base64url')}`;
    const copies = items.flatMap((i) => i.ids.map((id) => ({ id, msgId: i.msgId })));
    await this.o.sendBundle(jws, msgId, copies);
    this.o.sent?.(copies.length);
  }
}
