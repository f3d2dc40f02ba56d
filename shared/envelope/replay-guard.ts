import { RaError } from '../errors/index.js';

export interface ReplayGuardOptions {
  /** Least time an entry is remembered (an envelope's own exp + skew may keep it longer). */
  ttlMs: number;
  /** Most entries kept; the oldest are evicted first. */
  max: number;
  /** Clock (ms), for tests. */
  now?: () => number;
}

export interface ReplayCheckOptions {
  /** When the envelope stops being acceptable anyway (ms epoch: its exp plus the clock skew). */
  expiresAt?: number;
  /** Current time (ms), for tests; default the guard's clock. */
  now?: number;
}

interface Entry {
  nonce: string;
  digest: string;
  until: number;
}

/**
 * Remembers the envelopes a node accepted (id, nonce, content digest), in memory.
 *  - same id, same digest: 'redelivery', an idempotent retransmission; the caller answers with what
 *    it did the first time and never acts twice;
 *  - same id with other content, or a nonce already used under another id: RaError 'replayed'.
 * Entries live until max(now + ttlMs, expiresAt), and at most `max` of them are kept (oldest evicted
 * first): an envelope evicted early could be replayed while still unexpired, so `max` should cover
 * the traffic of one envelope lifetime. Call it only for envelopes whose signatures were verified.
 */
export class ReplayGuard {
  private readonly ttlMs: number;
  private readonly max: number;
  private readonly clock: () => number;
  /** Insertion order = age, for eviction. */
  private readonly byId = new Map<string, Entry>();
  private readonly byNonce = new Map<string, string>();

  constructor(opts: ReplayGuardOptions) {
    if (!(opts.ttlMs > 0) || !Number.isInteger(opts.max) || opts.max < 1) {
      throw new RaError('serverInternal', { detail: `invalid ReplayGuard options ttlMs=${opts.ttlMs} max=${opts.max}` });
    }
    this.ttlMs = opts.ttlMs;
    this.max = opts.max;
    this.clock = opts.now ?? Date.now;
  }

  get size(): number {
    return this.byId.size;
  }

  check(id: string, nonce: string, digest: string, opts: ReplayCheckOptions = {}): 'new' | 'redelivery' {
    const now = opts.now ?? this.clock();
    this.purge(now);
    const seen = this.live(id, now);
    if (seen) {
      if (seen.digest === digest) return 'redelivery';
      throw new RaError('unauthorized', { reason: 'replayed', detail: `envelope id ${id} was already used with other content` });
    }
    const owner = this.byNonce.get(nonce);
    if (owner !== undefined && owner !== id && this.live(owner, now)) {
      throw new RaError('unauthorized', { reason: 'replayed', detail: `envelope nonce already used by envelope ${owner}` });
    }
    while (this.byId.size >= this.max) this.drop(this.byId.keys().next().value!);
    this.byId.set(id, { nonce, digest, until: Math.max(now + this.ttlMs, opts.expiresAt ?? 0) });
    this.byNonce.set(nonce, id);
    return 'new';
  }

  private live(id: string, now: number): Entry | undefined {
    const e = this.byId.get(id);
    if (e && e.until <= now) {
      this.drop(id);
      return undefined;
    }
    return e;
  }

  /** Drops expired entries from the old end (amortised O(1); later ones expire lazily on look-up). */
  private purge(now: number): void {
    for (const [id, e] of this.byId) {
      if (e.until > now) break;
      this.drop(id);
    }
  }

  private drop(id: string): void {
    const e = this.byId.get(id);
    if (!e) return;
    this.byId.delete(id);
    if (this.byNonce.get(e.nonce) === id) this.byNonce.delete(e.nonce);
  }
}
