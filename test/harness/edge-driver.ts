import { connect, type NatsConnection } from 'nats';
import { nodeConnectOptions } from '../../shared/bus/auth.js';
import { EnvelopeQueue } from '../../shared/bus/queue.js';
import { downSubject } from '../../shared/bus/subjects.js';
import { parseDuration } from '../../shared/config/index.js';
import {
  KeyRing,
  loadOrCreateNodeKey,
  newEdgePayload,
  newRevokePayload,
  peekTyp,
  RESULT_TYP,
  signEdgeEnvelope,
  verifyResult,
  type CrlReason,
  type EdgePayload,
  type NodeKey,
  type ResultPayload,
} from '../../shared/envelope/index.js';
import { createLogger } from '../../shared/logging/logger.js';
import type { TestMesh } from './mesh.js';
import { makeCsr } from './acme-client.js';

/**
 * Acts as an edge on the bus, for tests that need to know or shape the envelope: the edge's own NATS
 * credentials on its own server, its signing key, its outbound stream; every verified result for it
 * is collected (CRL messages are left aside).
 */
export class EdgeDriver {
  private constructor(
    /** Every verified result for this edge, by envelope id, in arrival order. */
    readonly results: Map<string, ResultPayload[]>,
    readonly edge: string,
    readonly nc: NatsConnection,
    readonly key: NodeKey,
    readonly queue: EnvelopeQueue,
    private readonly dc: string,
  ) {}

  static async open(m: TestMesh, edge: string): Promise<EdgeDriver> {
    const ring = await KeyRing.fromDir(m.topology.keysDir(), m.topology.nodes.map((n) => n.id));
    const key = await loadOrCreateNodeKey(m.topology.keysDir(), edge);
    const nc = await connect({ servers: m.topology.natsUrl(edge), ...(await nodeConnectOptions(m.topology, edge)) });
    const results = new Map<string, ResultPayload[]>();
    nc.subscribe(downSubject(edge), {
      callback: (_e, msg) => {
        const text = new TextDecoder().decode(msg.data);
        if (peekTyp(text) !== RESULT_TYP) return;
        void verifyResult(text, { topology: m.topology, edge, keys: ring })
          .then((r) => results.set(r.id, [...(results.get(r.id) ?? []), r]))
          .catch(() => undefined);
      },
    });
    await nc.flush();
    const queue = await EnvelopeQueue.open(nc, m.topology, edge, { log: createLogger('test', { as: edge }, { level: 'silent' }) });
    return new EdgeDriver(results, edge, nc, key, queue, m.topology.node(edge).dc);
  }

  /**
   * An issue envelope for `names` signed by the edge: validated by http-01 and for account acct-1 unless
   * `identifiers` / `accountId` say otherwise (e.g. a renewal with `renewalOf` and method 'renewal').
   */
  async issueEnvelope(
    names: string[],
    opts: { csr?: string; requested?: EdgePayload['requested']; identifiers?: EdgePayload['identifiers']; accountId?: string; renewalOf?: string | null } = {},
  ): Promise<{ id: string; jws: string }> {
    const p = newEdgePayload({
      origin: { node: this.edge, dc: this.dc },
      csr: opts.csr ?? (await makeCsr(names)),
      identifiers:
        opts.identifiers ??
        names.map((value) => ({ type: 'dns' as const, value, validation: { method: 'http-01' as const, at: new Date().toISOString(), from: '127.0.0.1:80' } })),
      account: { id: opts.accountId ?? 'acct-1', eab: null, jwkThumbprint: 'thumb' },
      requested: opts.requested ?? { notBefore: null, notAfter: null },
      renewalOf: opts.renewalOf ?? null,
      ttlMs: parseDuration('5m'),
    });
    return { id: p.id, jws: await signEdgeEnvelope(p, this.key) };
  }

  /** A revoke envelope of acct-1 (the account issueEnvelope uses), signed by the edge. */
  async revokeEnvelope(serial: string, reason: CrlReason): Promise<{ id: string; jws: string }> {
    const p = newRevokePayload({
      origin: { node: this.edge, dc: this.dc },
      serial,
      reason,
      requester: { method: 'issuer-account', account: 'acct-1', jwkThumbprint: 'thumb' },
      ttlMs: parseDuration('5m'),
    });
    return { id: p.id, jws: await signEdgeEnvelope(p, this.key) };
  }

  /** Into the edge's outbound stream, with the envelope id as Nats-Msg-Id. */
  async send(id: string, jws: string): Promise<void> {
    await this.queue.send(jws, id);
  }

  /** Waits (bounded) until `count` results of `id` arrived; returns all of them. */
  async waitResults(id: string, count = 1, timeoutMs = 30_000): Promise<ResultPayload[]> {
    const until = Date.now() + timeoutMs;
    while ((this.results.get(id)?.length ?? 0) < count) {
      if (Date.now() > until) throw new Error(`timed out waiting for ${count} result(s) of ${id}`);
      await new Promise((r) => setTimeout(r, 25));
    }
    return this.results.get(id)!;
  }

  /** Sends and waits for the first result. */
  async exchange(id: string, jws: string, timeoutMs = 30_000): Promise<ResultPayload> {
    await this.send(id, jws);
    return (await this.waitResults(id, 1, timeoutMs))[0]!;
  }

  async close(): Promise<void> {
    await this.nc.close().catch(() => undefined);
  }
}
