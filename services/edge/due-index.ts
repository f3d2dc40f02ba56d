/**
 * When each record of an edge outbox (ACME orders, revocations, SCEP requests) next needs the sweep:
 * read from the store once at start and noted with every outbox write, so a sweep reads only the
 * records that are due, not every request waiting out a long outage. An entry whose record is gone
 * (answered meanwhile) is dropped when it comes due.
 */
export class DueIndex<R> {
  readonly #at = new Map<string, number>();

  /** `dueAt`: the time (ms epoch) the sweep must look at the record: its next retransmit, or its deadline. */
  constructor(private readonly dueAt: (record: R) => number) {}

  /** Records noted and not dropped yet. */
  get size(): number {
    return this.#at.size;
  }

  async load(entries: AsyncIterable<[string, R]>): Promise<void> {
    for await (const [id, r] of entries) this.note(id, r);
  }

  /** The record as just written. */
  note(id: string, record: R): void {
    this.#at.set(id, this.dueAt(record));
  }

  drop(id: string): void {
    this.#at.delete(id);
  }

  /** The records due at `now`, read with `get`; an id whose record is gone is dropped. */
  async *due(now: number, get: (id: string) => Promise<R | undefined>): AsyncGenerator<[string, R]> {
    for (const [id, at] of [...this.#at]) {
      if (at > now) continue;
      const r = await get(id);
      if (!r) {
        this.#at.delete(id);
        continue;
      }
      yield [id, r];
    }
  }
}
