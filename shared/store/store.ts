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
 * (a LevelDB get costs ~40-70 µs of CPU, most of an ACME request's store time). The cache stays
 * exact because this process is the database's only writer (LevelDB's LOCK file) and every write
 * goes through `Collection.put/del` or `NodeStore.batch`, which update it as the write is issued
 * and drop the key again if the write fails. Each read returns a fresh object.
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
    for (const o of ops) o.coll.cache.write(o.key, o.type === 'put' ? o.value : undefined);
    try {
      await this.db.batch(
        ops.map((o) =>
          o.type === 'put'
            ? { type: 'put' as const, key: o.key, value: o.value, sublevel: o.coll.db as never }
            : { type: 'del' as const, key: o.key, sublevel: o.coll.db as never },
        ),
      );
    } catch (e) {
      for (const o of ops) o.coll.cache.forget(o.key);
      throw e;
    }
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
  get(key: string): Promise<T | undefined>;
  put(key: string, value: T): Promise<void>;
  del(key: string): Promise<void>;
  iterator(opts?: { gte?: string; lt?: string; limit?: number }): AsyncIterable<[string, T]>;
}

/** JSON of recent values by key; `null` records a key known to be absent (deleted here). */
class ReadCache {
  readonly #m = new Map<string, string | null>();
  /** Bumped on every write of a key, so a read that raced a write does not cache what it read. */
  readonly #gen = new Map<string, number>();
  #writes = 0;
  /** The generation of the last key dropped from #gen (kept in generation order). */
  #evicted = 0;

  lookup(key: string): { hit: true; value: unknown } | { hit: false } {
    const s = this.#m.get(key);
    if (s === undefined) return { hit: false };
    // Refresh its place (Map order = age).
    this.#m.delete(key);
    this.#m.set(key, s);
    return { hit: true, value: s === null ? undefined : JSON.parse(s) };
  }

  write(key: string, value: unknown): void {
    this.#bump(key);
    const s = value === undefined ? null : JSON.stringify(value);
    this.#m.delete(key);
    if (s !== null && s.length > CACHE_MAX_VALUE) return;
    this.#set(key, s);
  }

  forget(key: string): void {
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

  #bump(key: string): void {
    this.#writes += 1;
    this.#gen.delete(key);
    this.#gen.set(key, this.#writes);
    if (this.#gen.size > CACHE_ENTRIES * 4) {
      const [oldest, g] = this.#gen.entries().next().value!;
      this.#gen.delete(oldest);
      this.#evicted = g;
    }
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
    // level 10: get() resolves undefined for a missing key.
    const v = (await this.db.get(key)) ?? undefined;
    this.cache.fill(key, v, mark);
    return v;
  }

  async put(key: string, value: T): Promise<void> {
    this.cache.write(key, value);
    try {
      await this.db.put(key, value);
    } catch (e) {
      this.cache.forget(key);
      throw e;
    }
  }

  async del(key: string): Promise<void> {
    this.cache.write(key, undefined);
    try {
      await this.db.del(key);
    } catch (e) {
      this.cache.forget(key);
      throw e;
    }
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
