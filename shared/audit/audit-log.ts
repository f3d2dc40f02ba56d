// The gateway's audit log: one JSON line per decision (issued or refused), append-only, each record
// carrying the SHA-256 of the previous one, so changing, removing or re-ordering any record breaks
// the chain from there on. The head (last seq and hash) is also kept in a separate file, so cutting
// records off the end is detected too.
// The head follows the log: it is written after each group of records is appended, and an append
// resolves once its records are in the log (it does not wait for the head to be on disk). A log that
// runs ahead of its head, by the records of a crash between the two writes, is intact so long as the
// head names one of its records; opening the log brings the head up to date. A log behind its head
// (records cut off), or a head naming a record the log does not hold, is broken. The head file is made
// when the log is started, so a missing one is broken too.
// Anchor the head elsewhere (a ticket, another system's log) when an attacker with write access to the
// gateway's disk is in scope: a hash chain alone cannot stop someone who rewrites the whole file and the head.
// Both files are written with synchronous calls, as loggers do (a few small writes to the page cache per
// group) rather than 4-5 promise-based fs calls, each a hand-off to the libuv pool and back. With the
// store's synchronous reads, this took the gateway's CPU per certificate at one in flight from 5.6-5.9
// to 3.9-4.4 ms (test/bench throughput, schedstat).
// The head file has two fixed-size slots, written in turn in place (one pwrite), each line carrying a
// check over its seq and hash: a write torn by a power cut spoils only the slot it was writing, and the
// other slot still holds the head before it (behind the log: intact). Writing a temporary file and
// renaming it over the head instead cost 130 us of CPU and held the event loop for about 250 us per
// group here (ext4: a rename over an existing file starts writeback of the new one), with groups mostly
// of one record (strace of the bench gateway: 2,526 renames for about 2,500 records), and the callers of
// a group's appends go on only once the synchronous head write has returned. A head file of the earlier
// form (one JSON line) is still read, and replaced by the two-slot form when the log is opened.

import { createHash } from 'node:crypto';
import { closeSync, fstatSync, ftruncateSync, openSync, renameSync, writeFileSync, writeSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Topology } from '../config/index.js';
import { faultPoint } from '../faults/fault-point.js';

export const AUDIT_FILE = 'audit.log';

/** Where a gateway keeps its audit log: <store>/audit. */
export function auditDir(topology: Topology, gatewayId: string): string {
  return join(topology.storeDir(gatewayId), 'audit');
}
export const AUDIT_HEAD_FILE = 'audit.head.json';
const GENESIS = '0'.repeat(64);
/** Bytes of one head slot: a JSON line padded with spaces, newline last. */
const HEAD_SLOT_BYTES = 128;
const HASH_RE = /^[0-9a-f]{64}$/;

export interface AuditEntry {
  /** What happened at the gateway. */
  event: 'issued' | 'refused' | 'revoked' | 'revoke-refused';
  /** Envelope id (the request id at the CA). */
  id: string;
  /** The hop path, edge first, gateway last. */
  path: string[];
  account: string;
  identifiers: string[];
  serial?: string;
  notAfter?: string;
  /** Problem type and detail of a refusal. */
  problem?: { type: string; detail: string };
}

export interface AuditRecord extends AuditEntry {
  seq: number;
  at: string;
  prev: string;
  hash: string;
}

export interface AuditHead {
  seq: number;
  hash: string;
}

/** The check of a head slot: the first 16 hex digits of SHA-256 over "seq:hash". */
function headCheck(h: AuditHead): string {
  return createHash('sha256').update(`${h.seq}:${h.hash}`).digest('hex').slice(0, 16);
}

/** One head slot: `{"seq":..,"hash":..,"check":..}` padded to HEAD_SLOT_BYTES, newline last. */
function headSlot(h: AuditHead): Buffer {
  const line = JSON.stringify({ seq: h.seq, hash: h.hash, check: headCheck(h) });
  return Buffer.from(line.padEnd(HEAD_SLOT_BYTES - 1, ' ') + '\n', 'latin1');
}

function isHead(v: unknown): v is AuditHead & Record<string, unknown> {
  const h = v as Record<string, unknown> | null;
  return typeof h === 'object' && h !== null && Number.isSafeInteger(h.seq) && (h.seq as number) >= 0 && typeof h.hash === 'string' && HASH_RE.test(h.hash);
}

/**
 * Reads a head file: the two-slot form (the newest slot whose check holds; a torn slot is passed
 * over) or the earlier single JSON line. `head` is undefined when no slot can be read.
 */
export function parseAuditHead(text: string): { head?: AuditHead; form: 'slots' | 'line' | 'unreadable' } {
  if (text.length === 2 * HEAD_SLOT_BYTES) {
    let best: AuditHead | undefined;
    for (let i = 0; i < 2; i++) {
      let v: unknown;
      try {
        v = JSON.parse(text.slice(i * HEAD_SLOT_BYTES, (i + 1) * HEAD_SLOT_BYTES));
      } catch {
        continue;
      }
      if (!isHead(v) || v.check !== headCheck(v)) continue;
      if (!best || v.seq > best.seq) best = { seq: v.seq, hash: v.hash };
    }
    return best ? { head: best, form: 'slots' } : { form: 'unreadable' };
  }
  try {
    const v: unknown = JSON.parse(text);
    if (isHead(v) && Object.keys(v).length === 2) return { head: { seq: v.seq, hash: v.hash }, form: 'line' };
  } catch {
    /* below */
  }
  return { form: 'unreadable' };
}

/** The head file of the log in `dir`, parsed; undefined when there is none. */
async function readHeadFile(dir: string): Promise<ReturnType<typeof parseAuditHead> | undefined> {
  try {
    return parseAuditHead(await readFile(join(dir, AUDIT_HEAD_FILE), 'latin1'));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

/** The head of the log in `dir` (undefined when there is no head file or none of it can be read). */
export async function readAuditHead(dir: string): Promise<AuditHead | undefined> {
  return (await readHeadFile(dir))?.head;
}

/** The hash of a record: over its canonical JSON without `hash` (keys in a fixed order). */
export function recordHash(r: Omit<AuditRecord, 'hash'>): string {
  const canonical = JSON.stringify(r, Object.keys(r).sort());
  return createHash('sha256').update(canonical).digest('hex');
}

export class AuditLog {
  private tail: Promise<unknown> = Promise.resolve();
  /** Set when a failed append could not be cut back: nothing more is appended. */
  private broken: unknown;
  /** Entries waiting for the next write, in call order. */
  private pending: Array<{ entry: AuditEntry; resolve: (r: AuditRecord) => void; reject: (e: unknown) => void }> = [];
  /** The slot of the head file the next head write goes to (the other holds the head before). */
  private slot = 0;
  /** Set by close(): the descriptors are gone (their numbers may already name other files). */
  private closing?: Promise<void>;

  private constructor(
    /** The log, opened for appending. */
    private readonly fd: number,
    /** The head file (two slots), opened for writing in place. */
    private readonly headFd: number,
    private head: AuditHead,
    /** Bytes of whole records in the log: where a failed append is cut back to. */
    private size: number,
  ) {}

  /** Opens (or starts) the log in `dir`, checking the chain it continues. */
  static async open(dir: string): Promise<AuditLog> {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const v = await verifyAuditLog(dir);
    if (!v.ok) throw new Error(`audit log ${join(dir, AUDIT_FILE)} is broken at record ${v.badSeq}: ${v.problem}; refusing to append to it`);
    const head = { seq: v.records, hash: v.head };
    // The head file is made anew, both slots naming the log's last record (the one time it is renamed
    // into place): a new log gets its head at once (seq 0), one that ran ahead of its head (a crash) is
    // brought level, and a head file of the earlier form becomes the two-slot one.
    const headPath = join(dir, AUDIT_HEAD_FILE);
    const tmp = `${headPath}.tmp`;
    writeFileSync(tmp, Buffer.concat([headSlot(head), headSlot(head)]), { mode: 0o600 });
    renameSync(tmp, headPath);
    const fd = openSync(join(dir, AUDIT_FILE), 'a', 0o600);
    return new AuditLog(fd, openSync(headPath, 'r+'), head, fstatSync(fd).size);
  }

  /**
   * Appends one record; resolves once it is written to the log (the head file follows right after).
   * Records are chained in call order; those that arrive while a write is under way go out together
   * in the next one (one append and one head update for the group).
   */
  append(entry: AuditEntry): Promise<AuditRecord> {
    if (this.closing) return Promise.reject(new Error('the audit log is closed'));
    return new Promise<AuditRecord>((resolve, reject) => {
      this.pending.push({ entry, resolve, reject });
      if (this.pending.length === 1) this.tail = this.tail.then(() => this.writePending()).catch(() => undefined);
    });
  }

  private async writePending(): Promise<void> {
    const group = this.pending;
    this.pending = [];
    if (this.broken !== undefined) {
      const e = new Error('the audit log could not be cut back after a failed append; restart the gateway to check it', { cause: this.broken });
      for (const g of group) g.reject(e);
      return;
    }
    let head = this.head;
    const recs: AuditRecord[] = [];
    for (const { entry } of group) {
      const body: Omit<AuditRecord, 'hash'> = { ...entry, seq: head.seq + 1, at: new Date().toISOString(), prev: head.hash };
      const rec: AuditRecord = { ...body, hash: recordHash(body) };
      recs.push(rec);
      head = { seq: rec.seq, hash: rec.hash };
    }
    const data = Buffer.from(recs.map((r) => JSON.stringify(r) + '\n').join(''));
    try {
      // O_APPEND: every write goes to the end of the log; a short write is continued.
      for (let off = 0; off < data.length; ) off += writeSync(this.fd, data, off);
    } catch (e) {
      // E.g. ENOSPC part way: what this group wrote is cut off again, so the log stays whole (a torn
      // last line would make the log unreadable, and the gateway refuse to start on it). If even that
      // fails, later appends fail too rather than chain after the torn bytes.
      try {
        ftruncateSync(this.fd, this.size);
      } catch (t) {
        this.broken = t;
      }
      for (const g of group) g.reject(e);
      return;
    }
    this.size += data.length;
    this.head = head;
    // Fault-injection point for crash tests: the records are in the log, the head file is not written yet.
    faultPoint('audit.after-append');
    group.forEach((g, i) => g.resolve(recs[i]!));
    // Before the next group is appended. A failed head write leaves the head behind the log (intact,
    // see verifyAuditLog); the next group writes it again.
    try {
      this.writeHead(head);
    } catch {
      /* behind, see above */
    }
  }

  /** Writes the head into the slot whose turn it is, in place; the other slot keeps the head before. */
  private writeHead(head: AuditHead): void {
    const slot = this.slot;
    const buf = headSlot(head);
    // A short write of 128 bytes to the page cache does not happen short of a failing disk; it is
    // refused all the same, and the slots swap only once this one is whole.
    if (writeSync(this.headFd, buf, 0, buf.length, slot * HEAD_SLOT_BYTES) !== buf.length) throw new Error('short write of the audit head');
    this.slot = 1 - slot;
  }

  /**
   * Waits for the appends under way, then closes the files. Once only: a second call waits for the
   * first. A descriptor number closed twice may by then name a file opened since (a gateway started
   * again in the same process gets the same numbers), which a second closeSync would close.
   */
  close(): Promise<void> {
    this.closing ??= this.tail.then(() => {
      closeSync(this.fd);
      closeSync(this.headFd);
    });
    return this.closing;
  }
}

export type AuditVerification =
  /** `headBehind`: records of the log after the one its head names (a crash between append and head write); -1: no head file and no records yet. */
  | { ok: true; records: number; head: string; headBehind: number }
  | { ok: false; records: number; head: string; badSeq: number; problem: string };

/** Recomputes the chain of the log in `dir` and compares its end with the head file. */
export async function verifyAuditLog(dir: string): Promise<AuditVerification> {
  let text = '';
  try {
    text = await readFile(join(dir, AUDIT_FILE), 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  const parsedHead = await readHeadFile(dir);
  const headFile = parsedHead?.head;
  const lines = text.split('\n').filter((l) => l.length > 0);
  let prev = GENESIS;
  let seq = 0;
  /** The hash of the record the head names (GENESIS for seq 0), once the walk has passed it. */
  let atHead: string | undefined = headFile?.seq === 0 ? GENESIS : undefined;
  const fail = (problem: string) => ({ ok: false as const, records: seq, head: prev, badSeq: seq + 1, problem });
  for (const line of lines) {
    let r: AuditRecord;
    try {
      r = JSON.parse(line) as AuditRecord;
    } catch {
      return fail('not a JSON record');
    }
    if (r.seq !== seq + 1) return fail(`sequence ${r.seq} where ${seq + 1} was expected (a record removed or moved)`);
    if (r.prev !== prev) return fail('prev does not match the hash of the record before (a record removed, moved or changed)');
    const { hash, ...body } = r;
    if (recordHash(body) !== hash) return fail('the record does not match its hash (changed)');
    prev = hash;
    seq = r.seq;
    if (headFile && r.seq === headFile.seq) atHead = hash;
  }
  if (headFile && (headFile.seq > seq || atHead !== headFile.hash)) {
    return {
      ok: false,
      records: seq,
      head: prev,
      badSeq: Math.min(seq, headFile.seq) + 1,
      problem: headFile.seq > seq
        ? `the log ends at record ${seq} but its head says ${headFile.seq} (records cut off or the head changed)`
        : `the head names record ${headFile.seq} with another hash than the log's (the head or the log changed)`,
    };
  }
  if (parsedHead && !headFile) {
    return { ok: false, records: seq, head: prev, badSeq: 1, problem: 'the head file cannot be read (no slot of it holds a head whose check holds)' };
  }
  if (!headFile && seq > 0) return { ok: false, records: seq, head: prev, badSeq: 1, problem: 'the head file is missing' };
  return { ok: true, records: seq, head: prev, headBehind: headFile ? seq - headFile.seq : -1 };
}
