import { randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import type { AcmeContext } from './context.js';

/**
 * RFC 8555 §6.5 anti-replay nonces: issued on every response, each accepted once.
 * Kept in memory with a bounded size and age; after a restart old nonces are refused with
 * badNonce and clients retry with the fresh nonce that came with the error (§6.5).
 */
export class NonceStore {
  private readonly live = new Map<string, number>();

  constructor(private readonly ttlMs = 3_600_000, private readonly max = 200_000) {}

  issue(): string {
    const n = randomBytes(16).toString('base64url');
    this.live.set(n, Date.now() + this.ttlMs);
    if (this.live.size > this.max) {
      const oldest = this.live.keys().next().value;
      if (oldest !== undefined) this.live.delete(oldest);
    }
    return n;
  }

  /** True if the nonce was issued here, not yet used and not expired; it is used up either way. */
  consume(n: string): boolean {
    const exp = this.live.get(n);
    if (exp === undefined) return false;
    this.live.delete(n);
    return exp > Date.now();
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
