import { mkdir } from 'node:fs/promises';
import { Level } from 'level';

/** Values kept per collection in the read cache (least recently written or read first out). */
export const CACHE_ENTRIES = 1024;
/** Values larger than this (JSON characters) are not cached: certificate chains, CRLs. */
const CACHE_MAX_VALUE = 16 * 1024;

/**
 * A node's durable store: one LevelDB per node, one sublevel per collection, JSON values.
 * Nodes write through this only; nothing a node accepted lives only in memory.
 *
 * Reads of recently written or read keys are answered from a per-collection cache of their JSON
 * (a LevelDB read costs 5-20 µs of CPU on this thread, the JSON parse of a cached copy less). The
 * cache stays exact because this process is the database's only writer (LevelDB's LOCK file) and every
 * write goes through `Collection.put/del` or `NodeStore.batch`, which update it as the write is issued,
 * keep it readable until it is done, and drop the key again if the write fails. Each read returns a
 * fresh object.
 */
export class NodeStore {
  readonly #collections = new Map<string, Collection<unknown>>();

  private constructor(private readonly db: Level<string, unknown>, readonly dir: string) {}

  static async open(dir: string): Promise<NodeStore> {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const db = new Level<string, unknown>(dir, { valueEncoding: 'json' });
    await db.open();
    return new NodeStore(db, dir);
  }

  /** The collection `name` (one object per name, so its cache sees every write). */
  collection<T>(name: string): Collection<T> {
    let c = this.#collections.get(name);
    if (!c) {
      c = new Collection<unknown>(this.db.sublevel<string, unknown>(name, { valueEncoding: 'json' }) as unknown as SubDb<unknown>);
      this.#collections.set(name, c);
    }
    return c as Collection<T>;
  }

  /** Atomic multi-collection write. */
  async batch(ops: Array<{ coll: Collection<unknown>; type: 'put'; key: string; value: unknown } | { coll: Collection<unknown>; type: 'del'; key: string }>): Promise<void> {
    const gens = ops.map((o) => o.coll.cache.write(o.key, o.type === 'put' ? o.value : undefined));
    try {
      await this.db.batch(
        ops.map((o) =>
          o.type === 'put'
            ? { type: 'put' as const, key: o.key, value: o.value, sublevel: o.coll.db as never }
            : { type: 'del' as const, key: o.key, sublevel: o.coll.db as never },
        ),
      );
    } catch (e) {
      ops.forEach((o, i) => o.coll.cache.forget(o.key, gens[i]!));
      throw e;
    }
    ops.forEach((o, i) => o.coll.cache.written(o.key, gens[i]!));
  }

  /** Every entry of every collection, keys as level writes them ("!<collection>!<key>"): for diagnostics and tests. */
  async *dump(): AsyncGenerator<[string, unknown]> {
    for await (const [k, v] of this.db.iterator()) yield [k, v];
  }

  async close(): Promise<void> {
    await this.db.close();
  }
}

interface SubDb<T> {
  /** 'opening' for a moment after the sublevel is made, until its (deferred) open is done. */
  readonly status: string;
  get(key: string): Promise<T | undefined>;
  getSync(key: string): T | undefined;
  put(key: string, value: T): Promise<void>;
  del(key: string): Promise<void>;
  iterator(opts?: { gte?: string; lt?: string; limit?: number }): AsyncIterable<[string, T]>;
}

/**
 * JSON of recent values by key; `null` records a key known to be absent (deleted here). Writes not yet
 * done are kept apart, whatever their size and however many: a read meanwhile returns what is being
 * written (reads are synchronous, so one issued right after an unfinished write would otherwise find
 * the value before it on disk).
 */
class ReadCache {
  readonly #m = new Map<string, string | null>();
  /** Writes issued and not yet done, by key: the latest one's generation and JSON. */
  readonly #writing = new Map<string, { gen: number; s: string | null }>();
  /** Bumped on every write of a key, so a read that raced a write does not cache what it read. */
  readonly #gen = new Map<string, number>();
  #writes = 0;
  /** The generation of the last key dropped from #gen (kept in generation order). */
  #evicted = 0;

  lookup(key: string): { hit: true; value: unknown } | { hit: false } {
    const w = this.#writing.get(key);
    const s = w ? w.s : this.#m.get(key);
    if (s === undefined) return { hit: false };
    if (!w) {
      // Refresh its place (Map order = age).
      this.#m.delete(key);
      this.#m.set(key, s);
    }
    return { hit: true, value: s === null ? undefined : JSON.parse(s) };
  }

  /** A write of `key` is issued: returns its generation, for written() or forget() when it ends. */
  write(key: string, value: unknown): number {
    const gen = this.#bump(key);
    const s = value === undefined ? null : JSON.stringify(value);
    this.#writing.set(key, { gen, s });
    this.#m.delete(key);
    if (s === null || s.length <= CACHE_MAX_VALUE) this.#set(key, s);
    return gen;
  }

  /** The write `gen` of `key` is on disk: reads may go there again. */
  written(key: string, gen: number): void {
    if (this.#writing.get(key)?.gen === gen) this.#writing.delete(key);
  }

  /** The write `gen` of `key` failed: what the disk holds is unknown here, the next read goes there. */
  forget(key: string, gen: number): void {
    this.written(key, gen);
    this.#m.delete(key);
    this.#bump(key);
  }

  /** Taken before a disk read; `fill` caches what the read returned only if `key` was not written since. */
  mark(key: string): { gen: number | undefined; at: number } {
    return { gen: this.#gen.get(key), at: this.#writes };
  }

  fill(key: string, value: unknown, mark: { gen: number | undefined; at: number }): void {
    if (value === undefined || this.#gen.get(key) !== mark.gen) return;
    // A write after the mark whose generation was dropped again would look like "never written".
    if (mark.gen === undefined && this.#evicted > mark.at) return;
    const s = JSON.stringify(value);
    if (s.length <= CACHE_MAX_VALUE) this.#set(key, s);
  }

  #bump(key: string): number {
    this.#writes += 1;
    this.#gen.delete(key);
    this.#gen.set(key, this.#writes);
    if (this.#gen.size > CACHE_ENTRIES * 4) {
      const [oldest, g] = this.#gen.entries().next().value!;
      this.#gen.delete(oldest);
      this.#evicted = g;
    }
    return this.#writes;
  }

  #set(key: string, s: string | null): void {
    this.#m.set(key, s);
    if (this.#m.size > CACHE_ENTRIES) this.#m.delete(this.#m.keys().next().value!);
  }
}

export class Collection<T> {
  /** @internal NodeStore.batch keeps it current. */
  readonly cache = new ReadCache();

  constructor(readonly db: SubDb<T>) {}

  async get(key: string): Promise<T | undefined> {
    const c = this.cache.lookup(key);
    if (c.hit) return c.value as T | undefined;
    const mark = this.cache.mark(key);
    // A point read on this thread (classic-level getSync, undefined for a missing key): the async get()
    // costs 40-90 us of CPU more here, the hand-off to the libuv pool and back, for a lookup LevelDB
    // answers in 5-15 us from its block cache or the page cache, and a missing key (every idempotency
    // check of a new request) mostly from the bloom filter. It holds the event loop for the read, at worst
    // one block read from disk.
    // A sublevel made a moment ago is still opening: the async get() waits for that.
    const v = (this.db.status === 'open' ? this.db.getSync(key) : await this.db.get(key)) ?? undefined;
    this.cache.fill(key, v, mark);
    return v;
  }

  async put(key: string, value: T): Promise<void> {
    await this.#write(key, value, () => this.db.put(key, value));
  }

  async del(key: string): Promise<void> {
    await this.#write(key, undefined, () => this.db.del(key));
  }

  /** One write of `key` (`value` undefined: a delete), seen by reads from the moment it is issued. */
  async #write(key: string, value: T | undefined, write: () => Promise<void>): Promise<void> {
    const gen = this.cache.write(key, value);
    try {
      await write();
    } catch (e) {
      this.cache.forget(key, gen);
      throw e;
    }
    this.cache.written(key, gen);
  }

  async *entries(opts: { prefix?: string; limit?: number } = {}): AsyncGenerator<[string, T]> {
    const range = opts.prefix !== undefined ? { gte: opts.prefix, lt: opts.prefix + '\xff' } : {};
    for await (const [k, v] of this.db.iterator({ ...range, ...(opts.limit ? { limit: opts.limit } : {}) })) yield [k, v];
  }

  async values(opts: { prefix?: string; limit?: number } = {}): Promise<T[]> {
    const out: T[] = [];
    for await (const [, v] of this.entries(opts)) out.push(v);
    return out;
  }
}
