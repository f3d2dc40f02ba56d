/**
 * At most `limit` async calls at once inside a node process; the others wait in arrival order (the
 * gateway's calls to its CA service: topology `cas.maxInFlight`).
 */
export class Semaphore {
  private active = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(readonly limit: number) {
    if (!Number.isInteger(limit) || limit < 1) throw new Error(`a semaphore needs a limit of 1 or more, not ${limit}`);
  }

  /** Calls under way now. */
  get running(): number {
    return this.active;
  }

  /** Calls waiting for their turn. */
  get queued(): number {
    return this.waiting.length;
  }

  async run<T>(fn: () => Promise<T>): Promise<T> {
    // A finished call hands its slot to the oldest waiting one (active stays the same), so a call
    // arriving meanwhile cannot overtake the queue.
    if (this.active >= this.limit) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.active += 1;
    try {
      return await fn();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.active -= 1;
    }
  }
}
