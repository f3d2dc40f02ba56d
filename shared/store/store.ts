import { mkdir } from 'node:fs/promises';
import { Level } from 'level';

/**
 * A node's durable store: one LevelDB per node, one sublevel per collection, JSON values.
 * Nodes write through this only; nothing a node accepted lives only in memory.
 */
export class NodeStore {
  private constructor(private readonly db: Level<string, unknown>, readonly dir: string) {}

  static async open(dir: string): Promise<NodeStore> {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const db = new Level<string, unknown>(dir, { valueEncoding: 'json' });
    await db.open();
    return new NodeStore(db, dir);
  }

  collection<T>(name: string): Collection<T> {
    return new Collection<T>(this.db.sublevel<string, T>(name, { valueEncoding: 'json' }) as unknown as SubDb<T>);
  }

  /** Atomic multi-collection write. */
  async batch(ops: Array<{ coll: Collection<unknown>; type: 'put'; key: string; value: unknown } | { coll: Collection<unknown>; type: 'del'; key: string }>): Promise<void> {
    await this.db.batch(
      ops.map((o) =>
        o.type === 'put'
          ? { type: 'put' as const, key: o.key, value: o.value, sublevel: o.coll.db as never }
          : { type: 'del' as const, key: o.key, sublevel: o.coll.db as never },
      ),
    );
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

export class Collection<T> {
  constructor(readonly db: SubDb<T>) {}

  async get(key: string): Promise<T | undefined> {
    // level 10: get() resolves undefined for a missing key.
    return (await this.db.get(key)) ?? undefined;
  }

  async put(key: string, value: T): Promise<void> {
    await this.db.put(key, value);
  }

  async del(key: string): Promise<void> {
    await this.db.del(key);
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
