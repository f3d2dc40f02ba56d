import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { mkdtemp, readFile, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { AUDIT_FILE, AUDIT_HEAD_FILE, AuditLog, parseAuditHead, readAuditHead, verifyAuditLog, type AuditEntry } from '../../shared/audit/audit-log.js';

// The gateway's audit log: a hash chain over JSON lines plus a head file (two slots written in turn).
// Every way of editing the file after the fact that the chain can see is detected, and names the first
// bad record; a head slot torn by a power cut falls back to the other slot.

const entry = (i: number): AuditEntry => ({
  event: i % 3 === 0 ? 'refused' : 'issued',
  id: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`,
  path: ['edge-a', 'relay-1', 'gw'],
  account: 'acct-1',
  identifiers: [`dns:d${i}.example.test`],
  ...(i % 3 === 0 ? { problem: { type: 'urn:ietf:params:acme:error:rejectedIdentifier', detail: 'no' } } : { serial: `0${i}` }),
});

describe('unit: audit log', () => {
  let dir: string;
  let pristine: string;
  let head: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ra-mesh-audit-'));
    const log = await AuditLog.open(dir);
    // Concurrent appends are chained in call order.
    const recs = await Promise.all(Array.from({ length: 10 }, (_, i) => log.append(entry(i + 1))));
    assert.deepEqual(recs.map((r) => r.seq), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    await log.close();
    pristine = await readFile(join(dir, AUDIT_FILE), 'utf8');
    head = await readFile(join(dir, AUDIT_HEAD_FILE), 'utf8');
  });
  after(async () => rm(dir, { recursive: true, force: true }));

  async function withLines(edit: (lines: string[]) => string[], editHead?: (h: string) => string | undefined) {
    await writeFile(join(dir, AUDIT_FILE), edit(pristine.trimEnd().split('\n')).join('\n') + '\n');
    const h = editHead ? editHead(head) : head;
    if (h === undefined) await unlink(join(dir, AUDIT_HEAD_FILE)).catch(() => undefined);
    else await writeFile(join(dir, AUDIT_HEAD_FILE), h);
    return verifyAuditLog(dir);
  }

  test('ok/intact log verifies; reopening continues the chain', async () => {
    const v = await withLines((l) => l);
    assert.equal(v.ok, true);
    assert.equal(v.records, 10);
    const log = await AuditLog.open(dir);
    const r = await log.append(entry(11));
    await log.close();
    assert.equal(r.seq, 11);
    assert.equal(r.prev, v.head);
    const again = await verifyAuditLog(dir);
    assert.equal(again.ok, true);
    assert.equal(again.records, 11);
  });

  const tampering: Array<[string, (l: string[]) => string[], number, RegExp, ((h: string) => string | undefined)?]> = [
    ['fail/a changed field', (l) => l.map((x, i) => (i === 4 ? x.replace('"acct-1"', '"acct-2"') : x)), 5, /changed/],
    ['fail/a changed field with its hash recomputed', (l) => l.map((x, i) => (i === 4 ? rehash(x.replace('"acct-1"', '"acct-2"')) : x)), 6, /prev does not match/],
    ['fail/a record removed from the middle', (l) => l.filter((_, i) => i !== 3), 4, /sequence 5 where 4/],
    ['fail/two records swapped', (l) => [l[0]!, l[2]!, l[1]!, ...l.slice(3)], 2, /sequence 3 where 2/],
    ['fail/records cut off the end', (l) => l.slice(0, 7), 8, /ends at record 7 but its head says 10/],
    ['fail/the head file removed', (l) => l, 1, /head file is missing/, () => undefined],
    ['fail/the head names a record with another hash', (l) => l, 8, /head names record 7 with another hash/, () => JSON.stringify({ seq: 7, hash: 'f'.repeat(64) })],
    ['fail/records cut off and the head rewound to one the log no longer has', (l) => l.slice(0, 3), 4, /ends at record 3 but its head says 5/, (h) => headAt(h, 5)],
    ['fail/a line that is not JSON', (l) => l.map((x, i) => (i === 2 ? x.slice(0, 20) : x)), 3, /not a JSON record/],
  ];
  for (const [name, edit, badSeq, problem, editHead] of tampering) {
    test(name, async () => {
      const v = await withLines(edit, editHead);
      assert.equal(v.ok, false);
      assert.ok(!v.ok && v.badSeq === badSeq, `badSeq ${!v.ok && v.badSeq}`);
      assert.match(!v.ok ? v.problem : '', problem);
    });
  }

  test('ok/a log ahead of its head (the gateway died between an append and the head write) is intact; opening it brings the head level', async () => {
    // The head as it was three records ago: what a kill -9 right after an append of three leaves.
    const rec7 = JSON.parse(pristine.trimEnd().split('\n')[6]!) as { hash: string };
    const v = await withLines((l) => l, () => JSON.stringify({ seq: 7, hash: rec7.hash }));
    assert.equal(v.ok, true);
    assert.ok(v.ok && v.headBehind === 3 && v.records === 10, JSON.stringify(v));
    const log = await AuditLog.open(dir);
    assert.deepEqual(await readAuditHead(dir), { seq: 10, hash: v.head });
    assert.equal(parseAuditHead(await readFile(join(dir, AUDIT_HEAD_FILE), 'latin1')).form, 'slots', 'the one-line head became the two-slot form');
    const r = await log.append(entry(11));
    await log.close();
    assert.equal(r.seq, 11);
    const again = await verifyAuditLog(dir);
    assert.ok(again.ok && again.records === 11 && again.headBehind === 0, JSON.stringify(again));
  });

  test('ok/a new log has its head file at once, so a log whose head is removed later is broken', async () => {
    const d = await mkdtemp(join(tmpdir(), 'ra-mesh-audit-new-'));
    try {
      const log = await AuditLog.open(d);
      assert.deepEqual(await readAuditHead(d), { seq: 0, hash: '0'.repeat(64) });
      await log.append(entry(1));
      await log.close();
      const v = await verifyAuditLog(d);
      assert.ok(v.ok && v.records === 1 && v.headBehind === 0, JSON.stringify(v));
    } finally {
      await rm(d, { recursive: true, force: true });
    }
  });

  test('ok/the head is written in place, in two slots by turns: the file keeps its inode and size, and names the last record', async () => {
    const d = await mkdtemp(join(tmpdir(), 'ra-mesh-audit-slots-'));
    try {
      const log = await AuditLog.open(d);
      const ino = (await stat(join(d, AUDIT_HEAD_FILE))).ino;
      const recs = [];
      // One group per append (each awaited), so every append writes the head once.
      for (let i = 1; i <= 5; i++) recs.push(await log.append(entry(i)));
      const text = await readFile(join(d, AUDIT_HEAD_FILE), 'latin1');
      const st = await stat(join(d, AUDIT_HEAD_FILE));
      assert.equal(st.ino, ino, 'no temporary file renamed over it');
      assert.equal(st.size, 256);
      assert.deepEqual(await readAuditHead(d), { seq: 5, hash: recs[4]!.hash });
      // The slots hold the last two heads: 5 in slot 0 (writes 1, 3, 5), 4 in slot 1 (writes 2, 4).
      assert.deepEqual([0, 1].map((i) => (JSON.parse(text.slice(i * 128, (i + 1) * 128)) as { seq: number }).seq), [5, 4]);
      await log.close();
    } finally {
      await rm(d, { recursive: true, force: true });
    }
  });

  /** A log of three records, appended one group each; returns the head file's text. */
  async function threeRecords(d: string): Promise<string> {
    const log = await AuditLog.open(d);
    for (let i = 1; i <= 3; i++) await log.append(entry(i));
    await log.close();
    return readFile(join(d, AUDIT_HEAD_FILE), 'latin1');
  }
  // Slot 0 holds seq 3 (the newest), slot 1 seq 2.
  const slotEdits: Array<[string, (slots: [string, string]) => [string, string], { ok: true; headBehind: number } | { ok: false; problem: RegExp }]> = [
    ['ok/the newest slot torn (a power cut during its write): the slot before it is the head, one record behind', ([a, b]) => ['\0'.repeat(40) + a.slice(40), b], { ok: true, headBehind: 1 }],
    ['ok/the newest slot half new, half old bytes: its check fails, the slot before it is the head', ([a, b]) => [a.slice(0, 20) + b.slice(20), b], { ok: true, headBehind: 1 }],
    ['ok/the older slot torn: the newest is the head', ([a, b]) => [a, ' '.repeat(127) + '\n'], { ok: true, headBehind: 0 }],
    ['fail/both slots unreadable', () => ['x'.repeat(127) + '\n', ' '.repeat(127) + '\n'], { ok: false, problem: /head file cannot be read/ }],
    ['fail/a slot whose seq was moved on without its check: passed over, and the other is edited likewise', ([a, b]) => [a.replace('"seq":3', '"seq":9'), b.replace('"seq":2', '"seq":8')], { ok: false, problem: /head file cannot be read/ }],
  ];
  for (const [name, edit, want] of slotEdits) {
    test(name, async () => {
      const d = await mkdtemp(join(tmpdir(), 'ra-mesh-audit-torn-'));
      try {
        const text = await threeRecords(d);
        const [a, b] = edit([text.slice(0, 128), text.slice(128)]);
        assert.equal(a.length + b.length, 256);
        await writeFile(join(d, AUDIT_HEAD_FILE), a + b, 'latin1');
        const v = await verifyAuditLog(d);
        assert.equal(v.ok, want.ok, JSON.stringify(v));
        if (want.ok && v.ok) {
          assert.equal(v.headBehind, want.headBehind);
          // Opening it brings the head level again and the chain goes on.
          const log = await AuditLog.open(d);
          await log.append(entry(4));
          await log.close();
          const again = await verifyAuditLog(d);
          assert.ok(again.ok && again.records === 4 && again.headBehind === 0, JSON.stringify(again));
        }
        if (!want.ok && !v.ok) {
          assert.match(v.problem, want.problem);
          await assert.rejects(AuditLog.open(d), /broken/);
        }
      } finally {
        await rm(d, { recursive: true, force: true });
      }
    });
  }

  test('ok/an append that fails part way (disk full) is cut back: the log stays whole and goes on', async () => {
    const d = await mkdtemp(join(tmpdir(), 'ra-mesh-audit-full-'));
    const realWrite = fs.writeSync;
    try {
      const log = await AuditLog.open(d);
      await log.append(entry(1));
      // The disk fills up: the next write stores half of what it is given, the one after fails (ENOSPC),
      // as write(2) does. (The only faked part: a real full disk is not for a unit test to make.)
      let calls = 0;
      fs.writeSync = ((fd: number, buf: Buffer, off: number) => {
        calls += 1;
        if (calls === 1) return realWrite(fd, buf, off, Math.ceil((buf.length - off) / 2));
        throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
      }) as typeof fs.writeSync;
      syncBuiltinESMExports();
      await assert.rejects(log.append(entry(2)), /ENOSPC/);
      assert.equal(calls, 2, 'the short write was continued, then failed');
      fs.writeSync = realWrite;
      syncBuiltinESMExports();
      const v = await verifyAuditLog(d);
      assert.ok(v.ok && v.records === 1, `nothing of the failed group is left: ${JSON.stringify(v)}`);
      // Space again: the chain goes on from record 1.
      const r = await log.append(entry(3));
      assert.equal(r.seq, 2);
      await log.close();
      const after = await verifyAuditLog(d);
      assert.ok(after.ok && after.records === 2 && after.headBehind === 0, JSON.stringify(after));
      assert.equal((await readFile(join(d, AUDIT_FILE), 'utf8')).trimEnd().split('\n').length, 2);
    } finally {
      fs.writeSync = realWrite;
      syncBuiltinESMExports();
      await rm(d, { recursive: true, force: true });
    }
  });

  test('ok/close twice: the second waits for the first and closes nothing opened since; fail/append after close', async () => {
    const d = await mkdtemp(join(tmpdir(), 'ra-mesh-audit-close-'));
    try {
      const log = await AuditLog.open(d);
      await log.append(entry(1));
      await log.close();
      // The lowest free descriptor numbers: most likely the ones the log just gave back.
      const other = fs.openSync(join(d, 'other'), 'w');
      const other2 = fs.openSync(join(d, 'other2'), 'w');
      await Promise.all([log.close(), log.close()]);
      // Both still open: a second closeSync of the log's numbers would have closed them (or thrown EBADF).
      fs.writeSync(other, 'still open');
      fs.writeSync(other2, 'still open');
      fs.closeSync(other);
      fs.closeSync(other2);
      await assert.rejects(log.append(entry(2)), /audit log is closed/);
      const v = await verifyAuditLog(d);
      assert.equal(v.ok, true);
      assert.equal(v.records, 1);
    } finally {
      await rm(d, { recursive: true, force: true });
    }
  });

  test('fail/the gateway refuses to append to a broken log', async () => {
    await withLines((l) => l.filter((_, i) => i !== 3));
    await assert.rejects(AuditLog.open(dir), /broken at record 4/);
  });
});

/** A one-line head (the earlier form, still read) with the hash of the given head file and `seq`. */
function headAt(h: string, seq: number): string {
  return JSON.stringify({ ...parseAuditHead(h).head!, seq });
}

/** Recomputes a record's own hash after an edit (what a careless forger would do). */
function rehash(line: string): string {
  const r = JSON.parse(line) as Record<string, unknown>;
  delete r.hash;
  const hash = createHash('sha256').update(JSON.stringify(r, Object.keys(r).sort())).digest('hex');
  return JSON.stringify({ ...r, hash });
}
