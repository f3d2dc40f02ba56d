import { randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import type { Collection, NodeStore } from '../../../shared/store/index.js';
import type { Logger } from '../logger.js';
import type { AcmeContext } from './context.js';

/** How long nonce writes are gathered into one store batch. */
const FLUSH_MS = 50;

/**
 * RFC 8555 §6.5 anti-replay nonces: issued on every response, each accepted once, for `ttlMs`.
 * Held in memory and written behind to the edge store, gathered into one batch every 50 ms (most
 * nonces are used before that and never reach the disk), so that nonces handed out before a restart are
 * still good after it. A nonce lost to a crash costs the client one badNonce retry (§6.5).
 */
export class NonceStore {
  private readonly live = new Map<string, number>();
  /** Writes not yet in the store: expiry to put, or null to delete. */
  private readonly pending = new Map<string, number | null>();
  /** Nonces being looked up in the store: a second request with the same one is refused meanwhile. */
  private readonly checking = new Set<string>();
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly persist?: { db: NodeStore; nonces: Collection<number> },
    private readonly ttlMs = 3_600_000,
    private readonly max = 200_000,
    private readonly log?: Logger,
  ) {}

  issue(): string {
    const n = randomBytes(16).toString('base64url');
    const exp = Date.now() + this.ttlMs;
    this.live.set(n, exp);
    this.write(n, exp);
    if (this.live.size > this.max) {
      const oldest = this.live.keys().next().value;
      if (oldest !== undefined) this.forget(oldest);
    }
    return n;
  }

  /** True if the nonce was issued here (also before a restart), not yet used and not expired; it is used up either way. */
  async consume(n: string): Promise<boolean> {
    const exp = this.live.get(n);
    if (exp !== undefined) {
      this.forget(n);
      return exp > Date.now();
    }
    // Used here already (its delete not yet written), or being checked by another request.
    if (!this.persist || this.pending.has(n) || this.checking.has(n)) return false;
    this.checking.add(n);
    try {
      const saved = await this.persist.nonces.get(n);
      if (saved === undefined) return false;
      await this.persist.nonces.del(n);
      return saved > Date.now();
    } finally {
      this.checking.delete(n);
    }
  }

  /** Writes what is pending (the edge calls this before it closes its store). */
  async flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (!this.persist || this.pending.size === 0) return;
    const coll = this.persist.nonces as Collection<unknown>;
    const ops = [...this.pending].map(([key, v]) => (v === null ? { coll, type: 'del' as const, key } : { coll, type: 'put' as const, key, value: v }));
    this.pending.clear();
    await this.persist.db.batch(ops).catch((e) => this.log?.warn({ err: e, nonces: ops.length }, 'nonces not written to the store'));
  }

  /** Removes expired nonces from the store (the edge's sweep calls this now and then). */
  async prune(now = Date.now()): Promise<number> {
    if (!this.persist) return 0;
    let removed = 0;
    for await (const [n, exp] of this.persist.nonces.entries()) {
      if (exp > now) continue;
      await this.persist.nonces.del(n);
      removed += 1;
    }
    return removed;
  }

  private forget(n: string): void {
    this.live.delete(n);
    // A nonce whose put is still pending never reaches the store; one already written is deleted.
    if (typeof this.pending.get(n) === 'number') this.pending.delete(n);
    else this.write(n, null);
  }

  private write(n: string, v: number | null): void {
    if (!this.persist) return;
    this.pending.set(n, v);
    if (!this.timer) {
      this.timer = setTimeout(() => void this.flush(), FLUSH_MS);
      this.timer.unref();
    }
  }
}

export function registerNonce(app: FastifyInstance, ctx: AcmeContext): void {
  // RFC 8555 §7.2: HEAD newNonce answers 200, GET answers 204; both carry Replay-Nonce and
  // Cache-Control: no-store. The onSend hook adds the nonce itself.
  const handler = (status: number) => async (_req: unknown, reply: { code(n: number): { header(k: string, v: string): { send(): unknown } } }) =>
    reply.code(status).header('Cache-Control', 'no-store').send();
  app.head(ctx.paths.newNonce, handler(200));
  app.get(ctx.paths.newNonce, handler(204));
}
