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
 *
 * Writes reach LevelDB in the order they were issued. classic-level runs each put, del and batch as
 * its own job on the libuv pool and leaves the order of concurrent ones undefined (Level/classic-level#40,
 * Level/leveldown#799): two puts of one key issued back to back could land in either order, so the
 * disk could keep the older value while the cache (and every read until a restart) had the newer
 * one. Here every write joins one queue; while a LevelDB write is under way the writes issued
 * meanwhile wait and then go down together as one atomic batch, in issue order (a group commit, as
 * LevelDB's own writer queue does for concurrent writers). So what a crash of the process leaves is
 * always a prefix of the writes in issue order. A group LevelDB refuses is written again one write at
 * a time, so only the refused write fails. The price is one LevelDB write under way at a time:
 * `npm run bench -- store` puts 80-125k writes/s through a store at 16 and 64 in flight where unordered
 * direct writes manage 140-200k (LevelDB groups the writers it finds waiting, several pool threads at
 * once), at about the same CPU per write; a node writes a few thousand a second at most. Ordering each
 * key alone instead (tried) kept the parallelism but cost twice the CPU per write: LevelDB found fewer
 * writers to group.
 */
export class NodeStore {
  readonly #collections = new Map<string, Collection<unknown>>();
  /** Writes issued and not yet handed to LevelDB, oldest first. */
  #queue: QueuedWrite[] = [];
  /** The group LevelDB is writing now, if any (the queue waits for it). */
  #draining?: Promise<void>;
  /** Reads on the libuv pool (of a collection still opening): the next group waits for them. */
  readonly #reads = new Set<Promise<unknown>>();

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
      c = new Collection<unknown>(this.db.sublevel<string, unknown>(name, { valueEncoding: 'json' }) as unknown as SubDb<unknown>, {
        batch: (ops) => this.batch(ops),
        reading: (p) => {
          this.#reads.add(p);
          void p.finally(() => this.#reads.delete(p));
        },
      });
      this.#collections.set(name, c);
    }
    return c as Collection<T>;
  }

  /** Atomic multi-collection write (Collection.put/del are batches of one), seen by reads from the moment it is issued. */
  async batch(ops: Array<{ coll: Collection<unknown>; type: 'put'; key: string; value: unknown } | { coll: Collection<unknown>; type: 'del'; key: string }>): Promise<void> {
    const gens = ops.map((o) => o.coll.cache.write(o.key, o.type === 'put' ? o.value : undefined));
    try {
      await this.#enqueue(
        ops.map((o): LevelOp =>
          o.type === 'put' ? { type: 'put', key: o.key, value: o.value, sublevel: o.coll.db as never } : { type: 'del', key: o.key, sublevel: o.coll.db as never },
        ),
      );
    } catch (e) {
      ops.forEach((o, i) => o.coll.cache.forget(o.key, gens[i]!));
      throw e;
    }
    ops.forEach((o, i) => o.coll.cache.written(o.key, gens[i]!));
  }

  /** Queues one atomic write; it settles once LevelDB has it (or refused it). */
  #enqueue(ops: LevelOp[]): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ ops, resolve, reject });
      this.#draining ??= this.#drain();
    });
  }

  /** Hands the queue to LevelDB group by group, in issue order, until it is empty. */
  async #drain(): Promise<void> {
    // Let the writes of this turn of the event loop join the first group.
    await Promise.resolve();
    while (this.#queue.length > 0) {
      let n = 0;
      let count = 0;
      while (n < this.#queue.length && (n === 0 || count + this.#queue[n]!.ops.length <= GROUP_MAX_OPS)) count += this.#queue[n++]!.ops.length;
      const group = this.#queue.splice(0, n);
      // A read issued before these writes must not see them: one answered on the pool (a collection made
      // a moment ago) runs before the group does. A read issued after a write of its key never goes to the
      // disk while that write is under way (the cache holds it), so this waits only for older reads.
      if (this.#reads.size > 0) await Promise.all(this.#reads);
      try {
        await this.#commit(group.length === 1 ? group[0]!.ops : group.flatMap((w) => w.ops));
        for (const w of group) w.resolve();
      } catch (e) {
        if (group.length === 1) {
          group[0]!.reject(e);
          continue;
        }
        // A LevelDB batch is all or nothing: none of the group is written. Each write alone, in order,
        // so that only the one LevelDB refuses (e.g. an undefined value) fails.
        for (const w of group) await this.#commit(w.ops).then(w.resolve, w.reject);
      }
    }
    this.#draining = undefined;
  }

  /** One LevelDB write: a lone put or del goes to its sublevel (cheaper per call than a root batch). */
  #commit(ops: LevelOp[]): Promise<void> {
    if (ops.length === 1) {
      const o = ops[0]!;
      const sub = o.sublevel as unknown as SubDb<unknown>;
      return o.type === 'put' ? sub.put(o.key, o.value) : sub.del(o.key);
    }
    return this.db.batch(ops);
  }

  /** Every entry of every collection, keys as level writes them ("!<collection>!<key>"): for diagnostics and tests. */
  async *dump(): AsyncGenerator<[string, unknown]> {
    for await (const [k, v] of this.db.iterator()) yield [k, v];
  }

  /** Closes the database once the writes issued before are in it. */
  async close(): Promise<void> {
    while (this.#draining) await this.#draining;
    await this.db.close();
  }
}

/** Most writes LevelDB is handed at once (a backlog drained after a stall goes down in groups of this size). */
const GROUP_MAX_OPS = 1024;

type LevelOp = { type: 'put'; key: string; value: unknown; sublevel: never } | { type: 'del'; key: string; sublevel: never };

interface QueuedWrite {
  ops: LevelOp[];
  resolve: () => void;
  reject: (e: unknown) => void;
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

  /** `store` is the NodeStore: its batch writes, and a read on the pool is announced to it. */
  constructor(
    readonly db: SubDb<T>,
    private readonly store: { batch: NodeStore['batch']; reading(p: Promise<unknown>): void },
  ) {}

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
    let v: T | undefined;
    if (this.db.status === 'open') v = this.db.getSync(key) ?? undefined;
    else {
      const reading = this.db.get(key);
      this.store.reading(reading.catch(() => undefined));
      v = (await reading) ?? undefined;
    }
    this.cache.fill(key, v, mark);
    return v;
  }

  /** A batch of one write (NodeStore.batch keeps the cache and the order). */
  async put(key: string, value: T): Promise<void> {
    await this.store.batch([{ coll: this as Collection<unknown>, type: 'put', key, value }]);
  }

  async del(key: string): Promise<void> {
    await this.store.batch([{ coll: this as Collection<unknown>, type: 'del', key }]);
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
