// Store-and-forward for envelopes travelling up, on JetStream (DESIGN.md "Subjects and streams").
// Every node with a parent owns an outbound stream (work-queue retention) in the JetStream domain of
// its own NATS server: a publish is acknowledged by that local server, so an edge in an isolated
// segment keeps accepting while its uplink is down. The parent reads each child's outbound stream
// with its own durable pull consumer, across domains through $JS.<domain>.API when the child sits on
// another server, and acks a message only after the next durable step (its own outbound publish
// acknowledged, or the gateway's result stored); the ack removes it from the child's stream. While a
// link is down the parent's fetches fail and are retried; the messages wait in the child's stream.
// Dedupe: Nats-Msg-Id = envelope id, within the stream's duplicate window.
//
// Verified against nats-server 2.9.10: the pull API used is the classic fetch (the newer consumer API
// of nats.js needs 2.10). Stream sourcing was tried first and dropped: a source whose stream did not
// exist yet when the sourcing stream was made never started on 2.9.10.

import {
  AckPolicy,
  DeliverPolicy,
  headers as natsHeaders,
  RetentionPolicy,
  StorageType,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  type NatsConnection,
  type StreamConfig,
} from 'nats';
import { parseDuration, type Topology } from '../config/index.js';
import type { Logger } from '../logging/logger.js';
import { consumerName, ENVELOPE_ID_HEADER, outStream, upSubject } from './subjects.js';

/** What a handler tells the queue to do with a message. */
export type Disposition =
  /** Done (forwarded durably, answered, or refused with a result): remove it. */
  | 'ack'
  /** Could not be handled now (e.g. the next hop's server is unreachable): deliver again later. */
  | 'retry'
  /** Never acceptable (malformed, forged, expired): remove it without handling. */
  | 'drop';

export interface QueueOptions {
  log: Logger;
  /** How long unforwarded envelopes are kept in an outbound stream. Default 7 days. */
  maxAgeMs?: number;
  /** Dedupe window for Nats-Msg-Id. Default 2 minutes. */
  duplicateWindowMs?: number;
  /** Most messages handled at once by this node. Default 64. */
  concurrency?: number;
  /** Redelivery when a handler does not finish in time. Default 30 s. */
  ackWaitMs?: number;
  /** Delay before a 'retry' is delivered again, doubled per redelivery up to 60 s. Default 1 s. */
  retryDelayMs?: number;
  /** Told of every message taken from a child's stream and how long it waited there (metrics). */
  observer?: QueueObserver;
}

/** Sees every message a node takes from its children's streams (shared/metrics). */
export interface QueueObserver {
  /** `waitMs`: the JetStream store time of the message (the child's server clock) to its receipt here. */
  received(from: string, waitMs: number): void;
}

/** A child's outbound stream as this node reads it (the status page's link state). */
export interface LinkState {
  child: string;
  /** up: the last read worked; down: it failed after having worked; connecting: it never worked yet. */
  state: 'up' | 'down' | 'connecting';
  failures: number;
  lastOkAt: number | null;
  lastError: string | null;
}

const NS = 1_000_000;
const DEFAULTS = { maxAgeMs: 7 * 86_400_000, duplicateWindowMs: 120_000, concurrency: 64, ackWaitMs: 30_000, retryDelayMs: 1_000 };
const FETCH_EXPIRES_MS = 1_000;
const FETCH_BATCH = 64;

/** What the queue knows of a message besides its data: `from` the child whose stream held it, `recvAt` when it was taken. */
export interface MessageInfo {
  redelivered: boolean;
  envelopeId?: string;
  from: string;
  recvAt: number;
  waitMs: number;
}

type Handler = (data: Uint8Array, info: MessageInfo) => Promise<Disposition>;

/** The queue settings of a topology (nats.queue). */
export function queueOptions(topology: Topology): Pick<QueueOptions, 'maxAgeMs' | 'duplicateWindowMs' | 'ackWaitMs'> {
  const q = topology.config.nats.queue;
  return { maxAgeMs: parseDuration(q.maxAge), duplicateWindowMs: parseDuration(q.duplicateWindow), ackWaitMs: parseDuration(q.ackWait) };
}

/** Adds the stream, or updates it when it exists (sources change with the topology). */
async function ensureStream(jsm: JetStreamManager, cfg: Partial<StreamConfig> & { name: string }): Promise<void> {
  try {
    await jsm.streams.info(cfg.name);
  } catch (e) {
    if (!/stream not found/i.test((e as Error).message)) throw e;
    await jsm.streams.add(cfg);
    return;
  }
  await jsm.streams.update(cfg.name, cfg);
}

export class EnvelopeQueue {
  private running = false;
  private loops: Array<Promise<void>> = [];
  private readonly inflight = new Set<Promise<void>>();
  private readonly o: typeof DEFAULTS;
  private readonly observer?: QueueObserver;
  private readonly links = new Map<string, LinkState>();
  private jsm?: Promise<JetStreamManager>;

  private constructor(
    private readonly nc: NatsConnection,
    private readonly js: JetStreamClient,
    private readonly topology: Topology,
    readonly nodeId: string,
    private readonly log: Logger,
    opts: QueueOptions,
  ) {
    const { observer, ...rest } = opts;
    this.o = { ...DEFAULTS, ...Object.fromEntries(Object.entries(rest).filter(([k, v]) => v !== undefined && k !== 'log')) } as typeof DEFAULTS;
    if (observer) this.observer = observer;
  }

  /** Messages being handled right now. */
  get inFlight(): number {
    return this.inflight.size;
  }

  /** The state of every child's stream this node reads. */
  linkStates(): LinkState[] {
    return [...this.links.values()].map((l) => ({ ...l }));
  }

  /** Messages in this node's own outbound stream (waiting for the parent); asks the node's own server. */
  async depth(): Promise<number> {
    const jsm = (this.jsm ??= this.nc.jetstreamManager());
    try {
      return (await (await jsm).streams.info(outStream(this.nodeId))).state.messages;
    } catch (e) {
      // A manager made while the server was away is not kept.
      if (this.jsm === jsm) this.jsm = undefined;
      throw e;
    }
  }

  /**
   * Creates (or updates) this node's streams on its own server: the outbound stream when it has a
   * parent, the inbound stream with its children's outbound streams as sources and its durable
   * consumer when it has children.
   */
  static async open(nc: NatsConnection, topology: Topology, nodeId: string, opts: QueueOptions): Promise<EnvelopeQueue> {
    // The topology's nats.queue settings, unless the caller overrides them.
    const q = new EnvelopeQueue(nc, nc.jetstream(), topology, nodeId, opts.log, { ...queueOptions(topology), ...opts });
    const node = topology.node(nodeId);
    if (node.parent) {
      await ensureStream(await nc.jetstreamManager(), {
        name: outStream(nodeId),
        subjects: [upSubject(node.parent, nodeId)],
        storage: StorageType.File,
        retention: RetentionPolicy.Workqueue,
        max_age: q.o.maxAgeMs * NS,
        duplicate_window: q.o.duplicateWindowMs * NS,
      });
    }
    return q;
  }

  /**
   * Puts an envelope in this node's outbound stream; resolves once the node's own server has stored
   * it (PubAck). A second send of the same envelope id within the duplicate window is a no-op.
   */
  async send(jws: string, envelopeId: string): Promise<{ duplicate: boolean }> {
    const parent = this.topology.node(this.nodeId).parent;
    if (!parent) throw new Error(`node ${this.nodeId} has no parent to send to`);
    const h = natsHeaders();
    h.set(ENVELOPE_ID_HEADER, envelopeId);
    const ack = await this.js.publish(upSubject(parent, this.nodeId), new TextEncoder().encode(jws), {
      msgID: envelopeId,
      headers: h,
      expect: { streamName: outStream(this.nodeId) },
    });
    return { duplicate: ack.duplicate };
  }

  /**
   * Starts reading every child's outbound stream: at most `concurrency` messages at once over all
   * children, each acked, retried or dropped per the handler.
   */
  consume(handler: Handler): void {
    if (this.running) throw new Error('already consuming');
    this.running = true;
    this.loops = this.topology.children(this.nodeId).map((c) => this.run(c.id, handler));
  }

  private async run(child: string, handler: Handler): Promise<void> {
    const mine = this.topology.jetStreamDomain(this.nodeId);
    const domain = this.topology.jetStreamDomain(child);
    const opts = domain === mine ? {} : { domain };
    const js = this.nc.jetstream(opts);
    const stream = outStream(child);
    const durable = consumerName(this.nodeId);
    let ready = false;
    let failures = 0;
    const link: LinkState = { child, state: 'connecting', failures: 0, lastOkAt: null, lastError: null };
    this.links.set(child, link);
    while (this.running && !this.nc.isClosed()) {
      try {
        if (!ready) {
          // The child makes its stream when it first starts; until then (or while the link is down) retry.
          await this.ensureConsumer(await this.nc.jetstreamManager(opts), stream, durable);
          ready = true;
        }
        const room = this.o.concurrency - this.inflight.size;
        if (room <= 0) {
          await Promise.race(this.inflight);
          continue;
        }
        for await (const m of js.fetch(stream, durable, { batch: Math.min(room, FETCH_BATCH), expires: FETCH_EXPIRES_MS })) {
          const p = this.handle(m, handler, child);
          this.inflight.add(p);
          void p.finally(() => this.inflight.delete(p));
        }
        failures = 0;
        Object.assign(link, { state: 'up', failures: 0, lastOkAt: Date.now(), lastError: null });
      } catch (e) {
        failures += 1;
        Object.assign(link, { state: link.lastOkAt === null ? 'connecting' : 'down', failures, lastError: (e as Error).message });
        if (failures === 1 || failures % 60 === 0) {
          this.log.warn({ err: (e as Error).message, child, stream, domain }, 'cannot read the child\'s outbound stream yet; retrying');
        }
        await new Promise((r) => setTimeout(r, Math.min(1_000, 100 * failures)));
      }
    }
  }

  private async ensureConsumer(jsm: JetStreamManager, stream: string, durable: string): Promise<void> {
    const cfg = { ack_wait: this.o.ackWaitMs * NS, max_ack_pending: Math.max(this.o.concurrency * 4, 256) };
    try {
      await jsm.consumers.info(stream, durable);
      await jsm.consumers.update(stream, durable, cfg);
    } catch (e) {
      if (!/consumer not found/i.test((e as Error).message)) throw e;
      await jsm.consumers.add(stream, { durable_name: durable, ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.All, max_deliver: -1, ...cfg });
    }
  }

  private async handle(m: JsMsg, handler: Handler, from: string): Promise<void> {
    let d: Disposition;
    const envelopeId = m.headers?.get(ENVELOPE_ID_HEADER) || undefined;
    try {
      const recvAt = Date.now();
      // Queue wait: the JetStream store time (the child's server) to now; clocks of two machines may
      // differ, so a negative difference counts as 0.
      const waitMs = Math.max(0, recvAt - Math.floor(m.info.timestampNanos / 1e6));
      this.observer?.received(from, waitMs);
      d = await handler(m.data, { redelivered: m.redelivered, ...(envelopeId ? { envelopeId } : {}), from, recvAt, waitMs });
    } catch (e) {
      this.log.error({ err: e, ...(envelopeId ? { envelopeId } : {}) }, 'envelope handler failed; will be delivered again');
      d = 'retry';
    }
    if (d === 'ack') m.ack();
    else if (d === 'drop') m.term();
    // Backs off while the next durable step stays unavailable (a CA down for hours): 1 s, 2 s, ... 60 s.
    else m.nak(Math.min(60_000, this.o.retryDelayMs * 2 ** Math.min(10, Math.max(0, m.info.redeliveryCount - 1))));
  }

  /** Stops fetching and waits for the messages being handled (their acks go out before the connection drains). */
  async stop(): Promise<void> {
    this.running = false;
    await Promise.allSettled(this.loops);
    await Promise.allSettled([...this.inflight]);
  }
}
