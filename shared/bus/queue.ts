// Store-and-forward for envelopes travelling up, on JetStream (DESIGN.md "Subjects and streams").
// Every node with a parent owns an outbound stream (work-queue retention) in the JetStream domain of
// its own NATS server: a publish is acknowledged by that local server, so an edge in an isolated
// segment keeps accepting while its uplink is down. The parent reads each child's outbound stream
// with its own durable pull consumer, across domains through $JS.<domain>.API when the child sits on
// another server, and acks a message only after the next durable step (its own outbound publish
// acknowledged, or the gateway's result stored); the ack removes it from the child's stream. While a
// link is down the parent's pull requests fail and are retried; the messages wait in the child's stream.
// Dedupe: Nats-Msg-Id names one copy of an envelope: the envelope id for the first copy, and each hop
// forwards a copy under the Nats-Msg-Id it received it with, so a JetStream redelivery (a node crashed
// after forwarding, before its ack) is dropped as a duplicate within the stream's duplicate window.
// The edge's end-to-end retransmit (a result lost on its way down) is a new copy with a new Nats-Msg-Id
// (resend): under the first one every stream on the path would drop it for the duplicate window.
//
// Verified against nats-server 2.9.10: the pull API used is the classic pull subscription (the newer consumer API
// of nats.js needs 2.10). Stream sourcing was tried first and dropped: a source whose stream did not
// exist yet when the sourcing stream was made never started on 2.9.10.

import {
  AckPolicy,
  consumerOpts,
  DeliverPolicy,
  ErrorCode,
  headers as natsHeaders,
  RetentionPolicy,
  StorageType,
  type JetStreamClient,
  type JetStreamManager,
  type JetStreamPullSubscription,
  type JsMsg,
  type MsgHdrs,
  type NatsConnection,
  type PubAck,
  type NatsError,
  type StreamConfig,
} from 'nats';
import { parseDuration, type Topology } from '../config/index.js';
import type { Logger } from '../logging/logger.js';
import { consumerName, ENVELOPE_ID_HEADER, ENVELOPE_IDS_HEADER, outStream, QUEUED_SINCE_HEADER, upSubject } from './subjects.js';

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
/** Most envelopes whose stored copy resend() remembers (the oldest is forgotten first). */
const MAX_REMEMBERED = 50_000;
/** Most stream sequences read back at start (the newest ones) and how many reads are in flight at once. */
const RECOVER_MAX_SEQS = 4 * MAX_REMEMBERED;
const RECOVER_PARALLEL = 32;
/** JetStream's dedupe header (nats.js does not export its name). */
const MSG_ID_HEADER = 'Nats-Msg-Id';
/** JetStream's "no message found" (JSNoMessageFoundErr). */
const NO_MESSAGE_FOUND = 10037;
const DEFAULTS = { maxAgeMs: 7 * 86_400_000, duplicateWindowMs: 120_000, concurrency: 64, ackWaitMs: 30_000, retryDelayMs: 1_000 };
const FETCH_EXPIRES_MS = 1_000;
const FETCH_BATCH = 64;
/**
 * A message being handled is kept from redelivery (in-progress acks) while this node makes progress:
 * until it has gone this many times ackWait without finishing a message or hearing of progress from a
 * handler (MessageInfo.progress), and in any case for at most WORKING_HARD_MAX_ACK_WAITS times ackWait
 * (a handler that never returns: a defect, not a slow CA).
 */
const WORKING_MAX_ACK_WAITS = 10;
const WORKING_HARD_MAX_ACK_WAITS = 100;
/** How long after its expiry a pull request may still be answered (408) before it counts as lost. */
const ANSWER_GRACE_MS = 2_000;

/** What the queue knows of a message besides its data: `from` the child whose stream held it, `recvAt` when it was taken. */
export interface MessageInfo {
  redelivered: boolean;
  envelopeId?: string;
  /** The Nats-Msg-Id of the copy (forward it under the same one); absent when the sender set none. */
  msgId?: string;
  from: string;
  recvAt: number;
  waitMs: number;
  /**
   * Tells the queue the node is getting on with its work (e.g. a request of a bundle answered), so the
   * messages it holds stay kept from redelivery while they wait their turn (a bundle behind a slow CA).
   */
  progress: () => void;
}

type Handler = (data: Uint8Array, info: MessageInfo) => Promise<Disposition>;

interface StoredCopy {
  seq: number;
  /** The Nats-Msg-Id of this copy of the envelope (in a bundle: of the copy that brought it to this relay). */
  msgId: string;
  /** ms epoch: when the envelope entered the stream (its first copy there). */
  since: number;
  /**
   * In a bundle: the envelopes of that message without a newer copy yet (one set shared by all of them).
   * A bundle cannot lose one envelope, so the message is removed once the set is empty.
   */
  holds?: Set<string>;
}

/** One envelope of a bundle: its id and the Nats-Msg-Id of the copy that brought it (see ENVELOPE_IDS_HEADER). */
export interface BundledCopy {
  id: string;
  msgId: string;
}

/** The envelopes of a bundle as its ENVELOPE_IDS_HEADER lists them (none when absent or unreadable). */
function parseBundledCopies(value: string | undefined): BundledCopy[] {
  if (!value) return [];
  const out: BundledCopy[] = [];
  for (const part of value.split(',')) {
    const eq = part.indexOf('=');
    if (eq <= 0 || eq === part.length - 1) return [];
    out.push({ id: part.slice(0, eq), msgId: part.slice(eq + 1) });
  }
  return out;
}

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
  /** The copy of each envelope last stored in this node's outbound stream: its sequence, Nats-Msg-Id, and since when the envelope waits there. */
  private readonly stored = new Map<string, StoredCopy>();
  /** Reading back the copies a previous run of this node left in its outbound stream (see recover()). */
  private recovering?: Promise<void>;
  /** Envelopes answered while recover() runs: what it reads of them is stale. */
  private readonly forgotten = new Set<string>();
  /** When this node last finished a message or a handler reported progress (keepWorking). */
  private lastProgressAt = Date.now();
  private readonly progressed = (): void => {
    this.lastProgressAt = Date.now();
  };

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
    return (await (await this.manager()).streams.info(outStream(this.nodeId))).state.messages;
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
      q.recovering = q.recover().finally(() => {
        q.recovering = undefined;
        q.forgotten.clear();
      });
    }
    return q;
  }

  /**
   * Rebuilds the map of stored copies from the outbound stream, in the background: after a restart
   * the envelopes a previous run stored still wait there (an uplink down for hours), and without
   * knowing their copies a retransmit would store a second copy of each (and a relay forward a new
   * copy next to the old one), doubling the backlog upstream works through when the link returns.
   * Reads the newest RECOVER_MAX_SEQS sequences with MSG.GET (a work-queue stream takes no second
   * consumer), RECOVER_PARALLEL at a time. Resends wait for it; first copies do not (nothing to replace).
   * If the stream cannot be read the map stays as it is and a retransmit may add one copy (logged).
   */
  private async recover(): Promise<void> {
    const started = Date.now();
    const name = outStream(this.nodeId);
    try {
      const jsm = await this.manager();
      const { state } = await jsm.streams.info(name);
      if (state.messages === 0) return;
      const first = Math.max(state.first_seq, state.last_seq - RECOVER_MAX_SEQS + 1);
      const found = new Map<string, StoredCopy>();
      let next = first;
      const worker = async () => {
        while (next <= state.last_seq) {
          const seq = next++;
          let m;
          try {
            m = await jsm.streams.getMessage(name, { seq });
          } catch (e) {
            // Gone since (delivered upstream, or a copy replaced): nothing waits under that sequence.
            if ((e as { api_error?: { err_code?: number } }).api_error?.err_code === NO_MESSAGE_FOUND) continue;
            throw e;
          }
          const envelopeId = m.header.get(ENVELOPE_ID_HEADER);
          const msgId = m.header.get(MSG_ID_HEADER);
          if (!envelopeId || !msgId) continue;
          const storedAt = m.time.getTime();
          const claimed = Number(m.header.get(QUEUED_SINCE_HEADER) || NaN);
          const since = Number.isFinite(claimed) && claimed < storedAt ? claimed : storedAt;
          const bundled = parseBundledCopies(m.header.get(ENVELOPE_IDS_HEADER));
          const holds = bundled.length ? new Set(bundled.map((c) => c.id)) : undefined;
          for (const c of bundled.length ? bundled : [{ id: envelopeId, msgId }]) {
            const had = found.get(c.id);
            // The newest copy is the one a retransmit compares with; the envelope waits since its oldest.
            if (!had || had.seq < seq) found.set(c.id, { seq, msgId: c.msgId, since: Math.min(since, had?.since ?? since), ...(holds ? { holds } : {}) });
            else had.since = Math.min(had.since, since);
          }
        }
      };
      await Promise.all(Array.from({ length: RECOVER_PARALLEL }, worker));
      // A bundle holds only the envelopes whose newest copy it is.
      for (const set of new Set([...found.values()].flatMap((c) => (c.holds ? [c.holds] : [])))) {
        for (const id of set) if (found.get(id)?.holds !== set) set.delete(id);
      }
      let recovered = 0;
      for (const [envelopeId, copy] of [...found].sort((a, b) => a[1].seq - b[1].seq)) {
        // Stored or answered during the scan: this run knows better.
        if (this.stored.has(envelopeId) || this.forgotten.has(envelopeId)) continue;
        this.remember(envelopeId, copy);
        recovered += 1;
      }
      this.log.info({ stream: name, messages: state.messages, recovered, ms: Date.now() - started }, 'copies waiting in the outbound stream read back');
    } catch (e) {
      this.log.warn({ err: (e as Error).message, stream: name }, 'could not read back the copies waiting in the outbound stream; a retransmit may store a second copy');
    }
  }

  /** Resolves once the copies of a previous run are known (at once when there is nothing to read back). */
  async recovered(): Promise<void> {
    await this.recovering;
  }

  /**
   * Puts an envelope in this node's outbound stream; resolves once the node's own server has stored
   * it (PubAck). `msgId` names the copy (default: the envelope id); a second send of the same copy
   * within the duplicate window is a no-op. At most one copy of an envelope waits in the stream: a
   * new copy replaces an older one still there (removed once the new one is stored; an older copy in
   * a bundle, once every envelope of that bundle has a newer copy).
   */
  async send(jws: string, envelopeId: string, msgId: string = envelopeId): Promise<{ duplicate: boolean }> {
    // A later copy may replace one a previous run of this node stored: know those first.
    if (msgId !== envelopeId && this.recovering) await this.recovering;
    const before = this.stored.get(envelopeId);
    let since: number | undefined;
    // The older copy goes first (the caller still holds the envelope durably: the edge's outbox, or
    // the relay's unacked message from its child); the new one keeps the time the envelope has waited.
    if (before && before.msgId !== msgId) since = await this.replace(before, envelopeId, new Map());
    const h = natsHeaders();
    h.set(ENVELOPE_ID_HEADER, envelopeId);
    if (since !== undefined) h.set(QUEUED_SINCE_HEADER, String(since));
    const ack = await this.publish(jws, msgId, h);
    // A duplicate's PubAck carries the sequence of the copy already stored.
    this.remember(envelopeId, { seq: ack.seq, msgId, since: since ?? (ack.duplicate && before ? before.since : Date.now()) });
    return { duplicate: ack.duplicate };
  }

  /**
   * Puts a relay's bundle in the outbound stream under `msgId`; `copies` are the envelopes it forwards,
   * each with the Nats-Msg-Id of the copy that brought it. Older copies of them are replaced as by send().
   */
  async sendBundle(jws: string, msgId: string, copies: BundledCopy[]): Promise<{ duplicate: boolean }> {
    if (this.recovering) await this.recovering;
    /** Since when each replaced envelope has waited in this stream (its older copy still waited there). */
    const sinceOf = new Map<string, number>();
    /** Older bundles looked up in this call: still in the stream or not (delivered upstream). */
    const present = new Map<number, Promise<boolean>>();
    for (const c of copies) {
      const before = this.stored.get(c.id);
      if (!before || before.msgId === c.msgId) continue;
      const since = await this.replace(before, c.id, present);
      if (since !== undefined) sinceOf.set(c.id, since);
    }
    const h = natsHeaders();
    h.set(ENVELOPE_ID_HEADER, msgId);
    h.set(ENVELOPE_IDS_HEADER, copies.map((c) => `${c.id}=${c.msgId}`).join(','));
    const now = Date.now();
    // One header for the message: the longest any of its envelopes has waited here (the parent's queue-wait metric).
    const earliest = Math.min(now, ...sinceOf.values());
    if (earliest < now) h.set(QUEUED_SINCE_HEADER, String(earliest));
    const ack = await this.publish(jws, msgId, h);
    const holds = new Set(copies.map((c) => c.id));
    for (const c of copies) this.remember(c.id, { seq: ack.seq, msgId: c.msgId, since: sinceOf.get(c.id) ?? now, holds });
    return { duplicate: ack.duplicate };
  }

  /**
   * An envelope gets a newer copy: the older one leaves (supersede). Returns since when the envelope has
   * waited in this stream when the older copy still waited there (removed now, or in a bundle that stays
   * for its other envelopes), undefined when it had gone upstream.
   */
  private async replace(before: StoredCopy, envelopeId: string, present: Map<number, Promise<boolean>>): Promise<number | undefined> {
    if (await this.supersede(before, envelopeId)) return before.since;
    if (before.holds && before.holds.size > 0 && (await this.stillStored(before.seq, present))) return before.since;
    return undefined;
  }

  /** Whether the message under `seq` is still in the outbound stream (looked up once per sequence in `cache`). */
  private stillStored(seq: number, cache: Map<number, Promise<boolean>>): Promise<boolean> {
    let p = cache.get(seq);
    if (!p) {
      p = this.manager()
        .then((jsm) => jsm.streams.getMessage(outStream(this.nodeId), { seq }))
        .then(
          () => true,
          () => false,
        );
      cache.set(seq, p);
    }
    return p;
  }

  /**
   * True when every one of these copies is already stored in the outbound stream by this run or the
   * last (a redelivery of a message this relay forwarded before its ack went out): nothing to send.
   */
  async holds(copies: BundledCopy[]): Promise<boolean> {
    if (this.recovering) await this.recovering;
    return copies.every((c) => this.stored.get(c.id)?.msgId === c.msgId);
  }

  /** An envelope has a newer copy: its older one leaves the stream (a bundle once no envelope of it is left). True if removed. */
  private async supersede(before: StoredCopy, envelopeId: string): Promise<boolean> {
    if (before.holds) {
      before.holds.delete(envelopeId);
      if (before.holds.size > 0) return false;
    }
    // Sequences are never reused in a stream: if that one is gone (delivered), nothing is removed.
    const jsm = await this.manager();
    return jsm.streams.deleteMessage(outStream(this.nodeId), before.seq, false).catch(() => false);
  }

  private async publish(jws: string, msgId: string, headers: MsgHdrs): Promise<PubAck> {
    const parent = this.topology.node(this.nodeId).parent;
    if (!parent) throw new Error(`node ${this.nodeId} has no parent to send to`);
    return this.js.publish(upSubject(parent, this.nodeId), new TextEncoder().encode(jws), {
      msgID: msgId,
      headers,
      expect: { streamName: outStream(this.nodeId) },
    });
  }

  /**
   * The end-to-end retransmit of an envelope sent before (`attempt` >= 2; `jws` may be re-signed).
   * While the last copy still waits in the outbound stream unchanged nothing is sent ('waiting': the
   * uplink is down, the copy is delivered when it returns). Otherwise (the copy went upstream and its
   * answer was lost, or the envelope was re-signed) a new copy is stored under its own Nats-Msg-Id
   * ('sent'). Upstream treats it as a redelivery of the same envelope id (the gateway answers it with
   * the result it stored).
   */
  async resend(jws: string, envelopeId: string, attempt: number): Promise<'waiting' | 'sent'> {
    if (this.recovering) await this.recovering;
    const last = this.stored.get(envelopeId);
    if (last) {
      const jsm = await this.manager();
      try {
        const m = await jsm.streams.getMessage(outStream(this.nodeId), { seq: last.seq });
        if (m.header.get(MSG_ID_HEADER) === last.msgId && new TextDecoder().decode(m.data) === jws) return 'waiting';
      } catch (e) {
        if ((e as { api_error?: { err_code?: number } }).api_error?.err_code !== NO_MESSAGE_FOUND) throw e;
      }
    }
    await this.send(jws, envelopeId, `${envelopeId}~${attempt}`);
    return 'sent';
  }

  private async manager(): Promise<JetStreamManager> {
    const jsm = (this.jsm ??= this.nc.jetstreamManager());
    try {
      return await jsm;
    } catch (e) {
      // A manager made while the server was away is not kept.
      if (this.jsm === jsm) this.jsm = undefined;
      throw e;
    }
  }

  /** The envelope is answered: resend() need not know its copy any more. */
  forget(envelopeId: string): void {
    this.stored.delete(envelopeId);
    if (this.recovering) this.forgotten.add(envelopeId);
  }

  private remember(envelopeId: string, copy: StoredCopy): void {
    // Replaced by a newer copy: the old one's bundle no longer holds this envelope.
    const old = this.stored.get(envelopeId);
    if (old?.holds && old.seq !== copy.seq) old.holds.delete(envelopeId);
    this.stored.delete(envelopeId);
    this.stored.set(envelopeId, copy);
    if (this.stored.size > MAX_REMEMBERED) this.stored.delete(this.stored.keys().next().value!);
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

  /**
   * Reads one child's outbound stream through a pull subscription that lives as long as the loop:
   * pull requests (batch, expires) are sent on it and every message the server delivers for them
   * arrives on the same inbox. (A per-request fetch() closes its inbox when the client's timer ends
   * the request, and a message the server sends in that moment waits out ackWait before it is
   * delivered again: stalls of 30 s seen in test/bench.) Requests are accounted in order: the server
   * fills the oldest first, a filled request ends, an expired one is answered with status 408.
   */
  private async run(child: string, handler: Handler): Promise<void> {
    const mine = this.topology.jetStreamDomain(this.nodeId);
    const domain = this.topology.jetStreamDomain(child);
    const opts = domain === mine ? {} : { domain };
    const js = this.nc.jetstream(opts);
    const stream = outStream(child);
    const durable = consumerName(this.nodeId);
    let failures = 0;
    const link: LinkState = { child, state: 'connecting', failures: 0, lastOkAt: null, lastError: null };
    this.links.set(child, link);
    const ok = () => {
      failures = 0;
      Object.assign(link, { state: 'up', failures: 0, lastOkAt: Date.now(), lastError: null });
    };
    const fail = (e: unknown) => {
      failures += 1;
      Object.assign(link, { state: link.lastOkAt === null ? 'connecting' : 'down', failures, lastError: (e as Error).message });
      if (failures === 1 || failures % 60 === 0) {
        this.log.warn({ err: (e as Error).message, child, stream, domain }, 'cannot read the child\'s outbound stream yet; retrying');
      }
    };
    /** Pull requests not yet filled or expired, oldest first. */
    let requests: Array<{ n: number; got: number; deadline: number }> = [];
    let wake = (): void => undefined;
    let pause = 0;
    const onMessage = (err: NatsError | null, m: JsMsg | null): void => {
      if (err) {
        if (err.code === ErrorCode.JetStream408RequestTimeout || err.code === ErrorCode.JetStream404NoMessages) {
          // The oldest request expired: the server answered, the link works.
          requests.shift();
          ok();
        } else if (err.code === ErrorCode.JetStream409) {
          // Too many waiting requests or acks pending: that request ends; ask again a little later.
          requests.shift();
          pause = 100;
        } else {
          // E.g. 503: no JetStream answers on that domain (the link to the child's server is down).
          requests = [];
          fail(err);
          pause = Math.min(1_000, 100 * failures);
        }
        wake();
        return;
      }
      if (!m) return;
      const r = requests[0];
      if (r && ++r.got >= r.n) requests.shift();
      ok();
      const p = this.handle(m, handler, child);
      this.inflight.add(p);
      void p.finally(() => {
        this.inflight.delete(p);
        wake();
      });
    };
    const sleep = (ms: number) =>
      new Promise<void>((res) => {
        const t = setTimeout(res, ms);
        wake = () => {
          clearTimeout(t);
          res();
        };
      });
    let sub: JetStreamPullSubscription | undefined;
    while (this.running && !this.nc.isClosed()) {
      try {
        if (!sub) {
          // The child makes its stream when it first starts; until then (or while the link is down) retry.
          await this.ensureConsumer(await this.nc.jetstreamManager(opts), stream, durable);
          sub = await js.pullSubscribe('', consumerOpts().bind(stream, durable).manualAck().callback(onMessage));
        }
        if (pause > 0) {
          const ms = pause;
          pause = 0;
          await sleep(ms);
          continue;
        }
        const now = Date.now();
        if (requests.length > 0 && requests[0]!.deadline < now) {
          // Neither filled nor answered with 408 in time: the request was lost (the link broke).
          const lost = requests.filter((r) => r.deadline < now).length;
          requests = requests.filter((r) => r.deadline >= now);
          throw new Error(`no answer from the child's server to ${lost} pull request(s)`);
        }
        const credit = requests.reduce((a, r) => a + r.n - r.got, 0);
        const room = this.o.concurrency - this.inflight.size - credit;
        // One request while idle; another only when there is room for a good batch.
        if (room > 0 && (requests.length === 0 || room >= Math.min(FETCH_BATCH, this.o.concurrency) / 2)) {
          const n = Math.min(room, FETCH_BATCH);
          requests.push({ n, got: 0, deadline: now + FETCH_EXPIRES_MS + ANSWER_GRACE_MS });
          sub.pull({ batch: n, expires: FETCH_EXPIRES_MS });
        }
        await sleep(FETCH_EXPIRES_MS / 4);
      } catch (e) {
        fail(e);
        await sleep(Math.min(1_000, 100 * failures));
      }
    }
    // No new requests; the outstanding ones end (filled or expired) before the inbox closes, so no
    // message the server sends for them is dropped here.
    const until = Date.now() + FETCH_EXPIRES_MS + ANSWER_GRACE_MS;
    while (sub && requests.length > 0 && Date.now() < until && !this.nc.isClosed()) await sleep(50);
    sub?.unsubscribe();
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
    const msgId = m.headers?.get(MSG_ID_HEADER) || undefined;
    const working = this.keepWorking(m, envelopeId);
    try {
      const recvAt = Date.now();
      // Queue wait: the JetStream store time (the child's server) to now, or from when an older copy
      // this one replaced was stored (the child's claim, never before the stream's maxAge); clocks of two
      // machines may differ, so a negative difference counts as 0.
      const storedAt = Math.floor(m.info.timestampNanos / 1e6);
      const since = Number(m.headers?.get(QUEUED_SINCE_HEADER) || NaN);
      const queuedAt = Number.isFinite(since) && since < storedAt ? Math.max(since, storedAt - this.o.maxAgeMs) : storedAt;
      const waitMs = Math.max(0, recvAt - queuedAt);
      this.observer?.received(from, waitMs);
      const info = { redelivered: m.redelivered, ...(envelopeId ? { envelopeId } : {}), ...(msgId ? { msgId } : {}), from, recvAt, waitMs, progress: this.progressed };
      d = await handler(m.data, info);
    } catch (e) {
      this.log.error({ err: e, ...(envelopeId ? { envelopeId } : {}) }, 'envelope handler failed; will be delivered again');
      d = 'retry';
    } finally {
      clearInterval(working);
      // A message finished, however it went: the node is not stuck.
      this.progressed();
    }
    try {
      if (d === 'ack') m.ack();
      else if (d === 'drop') m.term();
      // Backs off while the next durable step stays unavailable (a CA down for hours): 1 s, 2 s, ... 60 s.
      else m.nak(Math.min(60_000, this.o.retryDelayMs * 2 ** Math.min(10, Math.max(0, m.info.redeliveryCount - 1))));
    } catch (e) {
      // The connection closed while the message was handled (nats.js 2.29 drops the ack silently; a client
      // that throws must not reject this promise): unacked, the message is delivered again after ackWait.
      this.log.warn({ err: (e as Error).message, ...(envelopeId ? { envelopeId } : {}), disposition: d }, 'could not settle the message; it will be delivered again');
    }
  }

  /**
   * Keeps a message being handled from being delivered again: a handler may take longer than ackWait
   * (a bundle of many requests behind a slow CA service, or waiting for slots of cas.maxInFlight), and
   * a second delivery meanwhile would only be handled twice. JetStream restarts a message's ack timer
   * at each in-progress ack (+WPI), sent here every third of ackWait, as long as the node makes
   * progress: a message waiting its turn behind others (thousands of bundled requests queued for a few
   * CA slots) is kept however long the queue ahead of it takes, while a node that has finished nothing
   * for WORKING_MAX_ACK_WAITS times ackWait (its CA calls all hang) lets its messages go again. One
   * handler that never returns while others finish lets its message go after WORKING_HARD_MAX_ACK_WAITS.
   */
  private keepWorking(m: JsMsg, envelopeId: string | undefined): NodeJS.Timeout {
    const started = Date.now();
    const stalledMs = WORKING_MAX_ACK_WAITS * this.o.ackWaitMs;
    const hardUntil = started + WORKING_HARD_MAX_ACK_WAITS * this.o.ackWaitMs;
    const timer = setInterval(() => {
      const now = Date.now();
      const quietMs = now - Math.max(started, this.lastProgressAt);
      if (quietMs < stalledMs && now < hardUntil) {
        // On a connection closed meanwhile nats.js 2.29 drops the ack silently; should a client throw here,
        // in a timer nobody would catch it. Redelivery follows after ackWait either way.
        try {
          m.working();
        } catch {
          clearInterval(timer);
        }
        return;
      }
      clearInterval(timer);
      this.log.warn(
        { ...(envelopeId ? { envelopeId } : {}), ms: now - started, quietMs },
        quietMs >= stalledMs ? 'no progress on any message; this one is no longer kept from redelivery' : 'message handled for too long; no longer kept from redelivery',
      );
    }, Math.max(100, Math.floor(this.o.ackWaitMs / 3)));
    timer.unref();
    return timer;
  }

  /** Stops fetching and waits for the messages being handled (their acks go out before the connection drains). */
  async stop(): Promise<void> {
    this.running = false;
    await Promise.allSettled(this.loops);
    await Promise.allSettled([...this.inflight]);
  }
}
