import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Semaphore } from '../../shared/store/index.js';

/** A call that runs until released; records when it started. */
function gate(log: string[], name: string) {
  let release!: () => void;
  const done = new Promise<void>((r) => (release = r));
  return { run: async () => { log.push(name); await done; return name; }, release };
}

const tick = () => new Promise((r) => setImmediate(r));

test('ok/at most the limit run at once; the others start in arrival order as slots free', async () => {
  const s = new Semaphore(2);
  const started: string[] = [];
  const calls = ['a', 'b', 'c', 'd', 'e'].map((n) => gate(started, n));
  const results = calls.map((c) => s.run(c.run));
  await tick();
  assert.deepEqual(started, ['a', 'b']);
  assert.equal(s.running, 2);
  assert.equal(s.queued, 3);
  calls[1]!.release();
  await tick();
  assert.deepEqual(started, ['a', 'b', 'c']);
  // A call arriving now waits behind d and e.
  const late = gate(started, 'late');
  const lateResult = s.run(late.run);
  calls[0]!.release();
  calls[2]!.release();
  await tick();
  assert.deepEqual(started, ['a', 'b', 'c', 'd', 'e']);
  assert.equal(s.queued, 1);
  calls[3]!.release();
  await tick();
  assert.deepEqual(started.at(-1), 'late');
  calls[4]!.release();
  late.release();
  assert.deepEqual(await Promise.all([...results, lateResult]), ['a', 'b', 'c', 'd', 'e', 'late']);
  assert.equal(s.running, 0);
  assert.equal(s.queued, 0);
});

test('ok/a call that throws frees its slot and its error reaches the caller', async () => {
  const s = new Semaphore(1);
  await assert.rejects(s.run(async () => { throw new Error('CA down'); }), /CA down/);
  assert.equal(s.running, 0);
  assert.equal(await s.run(async () => 'next'), 'next');
});

for (const [name, limit] of [['fail/limit 0', 0], ['fail/negative limit', -1], ['fail/fractional limit', 1.5]] as const) {
  test(name, () => assert.throws(() => new Semaphore(limit), /limit of 1 or more/));
}
