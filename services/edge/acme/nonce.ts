import { randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import type { Collection } from '../../../shared/store/index.js';
import type { Logger } from '../logger.js';
import type { AcmeContext } from './context.js';

/**
 * RFC 8555 §6.5 anti-replay nonces: issued on every response, each accepted once, for `ttlMs`.
 * Held in memory and written to the edge store (without waiting: a nonce lost to a crash only costs the
 * client one badNonce retry, §6.5), so that nonces handed out before a restart are still good after it.
 */
export class NonceStore {
  private readonly live = new Map<string, number>();
  /** Nonces being looked up in the store: a second request with the same one is refused meanwhile. */
  private readonly checking = new Set<string>();

  constructor(
    private readonly stored?: Collection<number>,
    private readonly ttlMs = 3_600_000,
    private readonly max = 200_000,
    private readonly log?: Logger,
  ) {}

  issue(): string {
    const n = randomBytes(16).toString('base64url');
    const exp = Date.now() + this.ttlMs;
    this.live.set(n, exp);
    this.stored?.put(n, exp).catch((e) => this.log?.warn({ err: e }, 'nonce not stored'));
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
    if (!this.stored || this.checking.has(n)) return false;
    this.checking.add(n);
    try {
      const saved = await this.stored.get(n);
      if (saved === undefined) return false;
      await this.stored.del(n);
      return saved > Date.now();
    } finally {
      this.checking.delete(n);
    }
  }

  /** Removes expired nonces from the store (the edge's sweep calls this now and then). */
  async prune(now = Date.now()): Promise<number> {
    if (!this.stored) return 0;
    let removed = 0;
    for await (const [n, exp] of this.stored.entries()) {
      if (exp > now) continue;
      await this.stored.del(n);
      removed += 1;
    }
    return removed;
  }

  private forget(n: string): void {
    this.live.delete(n);
    this.stored?.del(n).catch((e) => this.log?.warn({ err: e }, 'used nonce not removed from the store'));
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
