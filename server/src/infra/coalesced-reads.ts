/**
 * Concurrent callers asking for the same read share it — but only a read that started after
 * they asked: a caller arriving while one is running waits for the next one, which starts when
 * the running one ends and serves everyone queued meanwhile. A subscriber that joined a room
 * and then asked for what came before never gets an answer older than its join (no gap), and a
 * burst of N callers costs about two reads, not N.
 */
export class CoalescedReads<T> {
  private readonly running = new Map<string, Promise<T>>();
  private readonly queued = new Map<string, Promise<T>>();

  read(key: string, load: () => Promise<T>): Promise<T> {
    const queued = this.queued.get(key);
    if (queued) return queued;
    const running = this.running.get(key);
    if (!running) return this.start(key, load);
    const next = running
      .catch(() => undefined)
      .then(() => {
        this.queued.delete(key);
        return this.start(key, load);
      });
    this.queued.set(key, next);
    return next;
  }

  private start(key: string, load: () => Promise<T>): Promise<T> {
    const p = load().finally(() => {
      if (this.running.get(key) === p) this.running.delete(key);
    });
    this.running.set(key, p);
    return p;
  }
}

/**
 * Lets waiters through `perTurn` at a time per event-loop turn (`setImmediate`): many answers
 * ready at once (hundreds of scrollback acks, each serialized for its own socket) are spread
 * over turns, so the live frames arriving meanwhile are broadcast between them instead of
 * after all of them.
 */
export class TurnPacer {
  private readonly waiting: Array<() => void> = [];
  private scheduled = false;

  /** @param perTurn waiters let through per turn. Default 16. */
  constructor(private readonly perTurn = 16) {}

  turn(): Promise<void> {
    return new Promise((resolve) => {
      this.waiting.push(resolve);
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.release());
      }
    });
  }

  private release(): void {
    for (const resolve of this.waiting.splice(0, this.perTurn)) resolve();
    if (this.waiting.length) setImmediate(() => this.release());
    else this.scheduled = false;
  }
}
