// What one node says about itself at GET /node-status on its metrics listener: the gateway's status
// collector reads it from every node of the topology (services/gateway/status/). JSON, times in ms.

import type { LatencySummary } from './latency-window.js';

export type NatsState = 'connected' | 'reconnecting' | 'disconnected' | 'closed' | 'unknown';

/** A child's outbound stream as its parent reads it. */
export interface InboundLinkState {
  child: string;
  /** up: the last read of the child's stream worked; down: it failed after having worked; connecting: never worked yet. */
  state: 'up' | 'down' | 'connecting';
  /** Consecutive failed reads. */
  failures: number;
  lastOkAt: number | null;
  lastError: string | null;
}

/** One refusal or rejection this node made, for "recent refusals". */
export interface RefusalRecord {
  at: number;
  node: string;
  /** rejected: the envelope failed verification and was dropped; refused: answered with a problem document. */
  kind: 'rejected' | 'refused';
  /** The policy layer (node id) or `cas` that refused; the verifying node for rejections. */
  layer: string;
  /** Verification reason (bad-signature, replayed, ...) or the ACME problem type (rejectedIdentifier, ...). */
  reason: string;
  envelopeId: string | null;
  /** The problem detail sent to the client (refusals only). */
  detail: string | null;
}

export interface NodeStatus {
  v: 1;
  node: string;
  role: string;
  at: number;
  startedAt: number;
  nats: { state: NatsState; reconnects: number };
  /** Relays and gateway: envelopes being handled now; edge: envelopes awaiting their result (outbox). */
  inFlight: number;
  /** Envelopes in this node's outbound stream waiting for the parent (null: no parent, or unknown now). */
  queued: number | null;
  /** Children's streams this node reads. */
  links: InboundLinkState[];
  /** Queue wait per child (stream store time -> this node received it), over the recent window. */
  wait: Record<string, LatencySummary>;
  /** Time from receipt to the envelope's next durable step (forwarded, answered), over the recent window. */
  processing: LatencySummary;
  /** Edge: finalize -> result, over the recent window. */
  issuance: LatencySummary | null;
  /** Totals since start. */
  counts: {
    processed: Record<string, number>;
    rejected: Record<string, number>;
    refused: Record<string, number>;
  };
  refusals: RefusalRecord[];
}
