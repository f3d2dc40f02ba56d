// The node store's read cache (shared/store/store.ts) against a real LevelDB in a temp dir: what a
// read returns is always what the database holds (checked by reopening it), whatever the order of
// writes, deletes, batches, failed writes and reads racing writes; and writes issued together reach
// LevelDB one group at a time, in the order they were issued.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { Level } from 'level';
import { CACHE_ENTRIES, NodeStore } from '../../shared/store/index.js';

async function withDb(fn: (db: NodeStore, dir: string) => Promise<void>) {
  const dir = await mkdtemp(join(tmpdir(), 'ra-mesh-cache-'));
  const db = await NodeStore.open(dir);
  try {
    await fn(db, dir);
  } finally {
    await db.close().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
}

test('ok/read-after-write-gives-a-fresh-copy', async () => {
  await withDb(async (db) => {
    const c = db.collection<{ n: number; tags: string[] }>('x');
    const v = { n: 1, tags: ['a'] };
    await c.put('k', v);
    v.tags.push('changed after put'); // the caller's object is not the stored value
    const a = (await c.get('k'))!;
    assert.deepEqual(a, { n: 1, tags: ['a'] });
    a.tags.push('changed by a reader');
    assert.deepEqual(await c.get('k'), { n: 1, tags: ['a'] });
    assert.equal(db.collection('x'), c, 'one collection object per name, so every write reaches its cache');
  });
});

test('ok/del-and-batch-are-seen', async () => {
  await withDb(async (db) => {
    const a = db.collection<string>('a');
    const b = db.collection<string>('b');
    await a.put('k', 'one');
    assert.equal(await a.get('k'), 'one');
    await a.del('k');
    assert.equal(await a.get('k'), undefined);
    await db.batch([
      { coll: a as never, type: 'put', key: 'k', value: 'two' },
      { coll: b as never, type: 'put', key: 'k', value: 'three' },
    ]);
    assert.equal(await a.get('k'), 'two');
    assert.equal(await b.get('k'), 'three');
    await db.batch([{ coll: b as never, type: 'del', key: 'k' }]);
    assert.equal(await b.get('k'), undefined);
  });
});

test('fail/a-refused-write-leaves-the-stored-value', async () => {
  await withDb(async (db) => {
    const c = db.collection<unknown>('x');
    await c.put('k', { v: 1 });
    // level refuses an undefined value; the cache must not keep what was never written.
    await assert.rejects(c.put('k', undefined));
    assert.deepEqual(await c.get('k'), { v: 1 });
    await assert.rejects(db.batch([{ coll: c as never, type: 'put', key: 'k', value: undefined }]));
    assert.deepEqual(await c.get('k'), { v: 1 });
  });
});

test('ok/a-read-racing-a-write-does-not-cache-the-old-value', async () => {
  await withDb(async (db) => {
    const c = db.collection<string>('x');
    await c.put('k', 'old');
    // Push k out of the cache so the next read goes to the disk.
    for (let i = 0; i <= CACHE_ENTRIES; i++) await c.put(`filler-${i}`, 'f');
    const reading = c.get('k'); // a disk read, in flight
    const writing = c.put('k', 'new'); // issued before the read resolves
    assert.equal(await reading, 'old');
    await writing;
    assert.equal(await c.get('k'), 'new');
  });
});

test('ok/a-read-during-an-unfinished-write-sees-it', async () => {
  await withDb(async (db) => {
    // Values too large for the cache, and more writes at once than it holds: a read issued while they
    // are under way (reads are synchronous) must still see them, not what the disk held before.
    const c = db.collection<{ v: number; pad: string }>('x');
    const big = (v: number) => ({ v, pad: 'p'.repeat(20_000) });
    await c.put('big', big(1));
    const writing = c.put('big', big(2));
    assert.equal((await c.get('big'))?.v, 2, 'read while the put is under way');
    await writing;
    assert.equal((await c.get('big'))?.v, 2, 'read from the disk after it');
    const deleting = c.del('big');
    assert.equal(await c.get('big'), undefined, 'read while the del is under way');
    await deleting;
    assert.equal(await c.get('big'), undefined);

    const n = CACHE_ENTRIES + 50;
    for (let i = 0; i < n; i++) await c.put(`k${i}`, { v: 1, pad: '' });
    const writes = Array.from({ length: n }, (_, i) => c.put(`k${i}`, { v: 2, pad: '' }));
    const batch = db.batch([{ coll: c as never, type: 'put', key: 'k0', value: big(3) }]);
    assert.equal((await c.get('k0'))?.v, 3, 'the latest write of a key under way is what a read sees');
    for (let i = 1; i < n; i++) assert.equal((await c.get(`k${i}`))?.v, 2, `k${i} while ${n} writes are under way`);
    await Promise.all([...writes, batch]);
    assert.equal((await c.get('k0'))?.v, 3);
  });
});

test('ok/seeded-random-operations-match-the-database', async () => {
  await withDb(async (db, dir) => {
    const c = db.collection<{ i: number; pad: string }>('x');
    const model = new Map<string, { i: number; pad: string }>();
    let seed = 12345;
    const rnd = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const keys = 3 * CACHE_ENTRIES;
    const pending: Array<Promise<unknown>> = [];
    for (let op = 0; op < 6000; op++) {
      const k = `k${rnd(keys)}`;
      const r = rnd(10);
      if (r < 4) {
        // Now and then a value too large for the cache (read from the disk, or from the write under way).
        const v = { i: op, pad: 'p'.repeat(rnd(20) === 0 ? 17_000 : rnd(200)) };
        model.set(k, v);
        pending.push(c.put(k, v));
      } else if (r < 5) {
        model.delete(k);
        pending.push(c.del(k));
      } else if (r < 6) {
        const k2 = `k${rnd(keys)}`;
        const v = { i: op, pad: '' };
        model.set(k, v);
        model.delete(k2 === k ? `${k}-none` : k2);
        pending.push(db.batch([
          { coll: c as never, type: 'put', key: k, value: v },
          ...(k2 === k ? [] : [{ coll: c as never, type: 'del' as const, key: k2 }]),
        ]));
      } else {
        const want = model.get(k);
        pending.push(c.get(k).then((got) => assert.deepEqual(got, want, `read of ${k} at op ${op}`)));
      }
      if (pending.length >= 16) await Promise.all(pending.splice(0));
    }
    await Promise.all(pending);
    for (let i = 0; i < keys; i++) assert.deepEqual(await c.get(`k${i}`), model.get(`k${i}`), `k${i} through the cache`);
    await db.close();
    const again = await NodeStore.open(dir);
    try {
      const d = again.collection<{ i: number; pad: string }>('x');
      for (let i = 0; i < keys; i++) assert.deepEqual(await d.get(`k${i}`), model.get(`k${i}`), `k${i} on disk`);
    } finally {
      await again.close();
    }
  });
});

test('ok/writes-issued-together-reach-the-disk-in-issue-order', async () => {
  // classic-level leaves the order of concurrent writes undefined (each is a job on the libuv pool):
  // the store must put them down in the order they were issued, or the disk keeps an older value than
  // every read saw until the restart.
  await withDb(async (db, dir) => {
    const c = db.collection<number>('x');
    const d = db.collection<number>('y');
    const writes: Array<Promise<void>> = [];
    for (let round = 0; round <= 41; round++) {
      for (let k = 0; k < 25; k++) {
        writes.push(c.put(`k${k}`, round));
        if (round % 3 === 0) writes.push(c.del(`k${k}`));
        writes.push(db.batch([
          { coll: d as never, type: 'put', key: `k${k}`, value: round },
          ...(round % 4 === 0 ? [{ coll: d as never, type: 'del' as const, key: `k${k}` }] : []),
        ]));
      }
    }
    await Promise.all(writes);
    await db.close();
    const again = await NodeStore.open(dir);
    try {
      for (let k = 0; k < 25; k++) {
        assert.equal(await again.collection<number>('x').get(`k${k}`), 41, `x/k${k}: the last put`);
        assert.equal(await again.collection<number>('y').get(`k${k}`), 41, `y/k${k}: the last batch`);
      }
    } finally {
      await again.close();
    }
  });
});

test('fail/a-refused-write-among-others-fails-alone', async () => {
  // Writes issued together go down as one LevelDB batch; one that LevelDB refuses must not take the
  // others with it.
  await withDb(async (db, dir) => {
    const c = db.collection<unknown>('x');
    const a = c.put('a', 1);
    const bad = c.put('b', undefined);
    const b2 = db.batch([{ coll: c as never, type: 'put', key: 'c', value: 3 }]);
    const bad2 = db.batch([
      { coll: c as never, type: 'put', key: 'd', value: 4 },
      { coll: c as never, type: 'put', key: 'e', value: undefined },
    ]);
    const last = c.put('f', 6);
    // In the same group as the refused write of its key: written once that one is set apart.
    const bAgain = c.put('b', 2);
    await assert.rejects(bad);
    await assert.rejects(bad2);
    await Promise.all([a, b2, last, bAgain]);
    await db.close();
    const again = await NodeStore.open(dir);
    try {
      const x = again.collection<unknown>('x');
      assert.deepEqual([await x.get('a'), await x.get('b'), await x.get('c'), await x.get('d'), await x.get('e'), await x.get('f')], [1, 2, 3, undefined, undefined, 6]);
    } finally {
      await again.close();
    }
  });
});

test('ok/one-leveldb-write-at-a-time-in-issue-order', async () => {
  // The mechanism behind the issue order, watched where classic-level hands writes to its native
  // binding (Level's own _put/_del/_batch, which every write path ends in): never two under way at
  // once, and the keys in the order they were issued. Writes issued meanwhile are grouped.
  const proto = Level.prototype as unknown as Record<'_put' | '_del' | '_batch', (...a: unknown[]) => Promise<void>>;
  const orig = { _put: proto._put, _del: proto._del, _batch: proto._batch };
  const seen: string[] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  let calls = 0;
  const watch = (name: keyof typeof orig, keysOf: (a: unknown[]) => string[]) =>
    async function (this: unknown, ...a: unknown[]) {
      calls += 1;
      inFlight += 1;
      maxInFlight = Math.max(maxInFlight, inFlight);
      seen.push(...keysOf(a));
      try {
        return await orig[name].apply(this, a);
      } finally {
        inFlight -= 1;
      }
    };
  // Keys as the root sees them ("!x!k1"): the collection's name is the sublevel's prefix.
  const plain = (k: unknown) => String(k).replace(/^!\w+!/, '');
  await withDb(async (db) => {
    const c = db.collection<number>('x');
    await c.put('warm', 0);
    proto._put = watch('_put', (a) => [plain(a[0])]);
    proto._del = watch('_del', (a) => [plain(a[0])]);
    proto._batch = watch('_batch', (a) => (a[0] as Array<{ key: unknown }>).map((o) => plain(o.key)));
    try {
      const issued: string[] = [];
      const writes: Array<Promise<void>> = [];
      for (let i = 0; i < 120; i++) {
        const k = `k${i % 7}`;
        if (i % 5 === 0) {
          writes.push(db.batch([{ coll: c as never, type: 'put', key: k, value: i }, { coll: c as never, type: 'del', key: `${k}-b` }]));
          issued.push(k, `${k}-b`);
        } else {
          writes.push(i % 3 === 0 ? c.del(k) : c.put(k, i));
          issued.push(k);
        }
        // Now and then a later turn of the event loop, while a group is under way.
        if (i % 40 === 39) await new Promise((r) => setImmediate(r));
      }
      await Promise.all(writes);
      assert.equal(maxInFlight, 1, 'LevelDB writes under way at once');
      assert.deepEqual(seen, issued, 'keys in the order they were issued');
      assert.ok(calls < 120, `${calls} LevelDB writes for 120 issued: grouped`);
    } finally {
      Object.assign(proto, orig);
    }
  });
});
