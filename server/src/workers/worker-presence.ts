import type { Logger } from 'pino';
import type { Clock, TimerHandle } from '@handoff/shared';
import { em, type Orm } from '../infra/db/orm.js';
import { isDatabaseUnavailable } from '../errors.js';
import { markHeard, markHello, markOffline, writeHeard } from './presence-queries.js';

export interface WorkerPresenceOptions {
  clock: Clock;
  /**
   * HEARTBEAT_FLUSH: how often the heartbeats this node heard are written, in one statement
   * for all of them, ms. Well below WORKER_LOST_AFTER − HEARTBEAT_INTERVAL, and the sweeper
   * asks every node to flush before it judges anyone silent (see Sweeper.flushHeard).
   */
  flushMs: number;
  log: Logger;
  /** A worker declared lost was heard again (its heartbeat reached the database): its runs are reclaimed. */
  onHeardAgain: (workerId: string) => Promise<unknown>;
}

/**
 * Whether a worker is heard from: `online` while it says hello or heartbeats, `offline`
 * when its last socket left, `lost` when the sweeper found it silent for
 * WORKER_LOST_AFTER.
 *
 * Heartbeats cost no database write each: the node keeps, per worker, when it last heard
 * it (one map entry per worker, overwritten, so its size is bounded by the fleet and does
 * not grow with time or with an outage) and writes them all in one UPDATE per flush. Every
 * time written is on the injected clock, the one the sweeper judges silence by: a beat is
 * written as when the node received it, so a late flush never makes a worker look more
 * recently heard than it was, and `greatest(…)` keeps an older beat (another node's, or a
 * retried batch) from moving it back. Hellos and departures stay immediate writes (there
 * are few of them, and bounded).
 */
export class WorkerPresence {
  /** Worker id → when this node last heard it (clock ms), not yet written. */
  private heard = new Map<string, number>();
  private timer: TimerHandle | null = null;
  /** Flushes run one after another: a caller of flush() knows everything heard before its call is written. */
  private tail: Promise<void> = Promise.resolve();
  private writing = false;
  /** When the outage that failed flushes began (logged once, not per flush). */
  private downSince: number | null = null;
  private readonly clock: Clock;
  private readonly log: Logger;

  constructor(
    private readonly orm: Orm,
    private readonly options: WorkerPresenceOptions,
  ) {
    this.clock = options.clock;
    this.log = options.log;
  }

  start(): void {
    if (this.timer) return;
    // A tick that finds a flush still running is skipped: a slow database must not pile up flushes.
    this.timer = this.clock.setInterval(() => {
      if (!this.writing) this.flush().catch(() => {}); // logged in write()
    }, this.options.flushMs);
    this.timer.unref();
  }

  /** Stops the timer and writes what was heard (a draining node's last beats are not lost). */
  async stop(): Promise<void> {
    this.timer?.cancel();
    this.timer = null;
    await this.flush().catch(() => {});
  }

  /** Heartbeats heard and not yet written. */
  get pending(): number {
    return this.heard.size;
  }

  /** A hello on a new socket; `connectedAt` identifies this connection for `left`. Returns true if it had been lost. */
  async hello(workerId: string, capacity: number, version: string, connectedAt: Date): Promise<boolean> {
    return (await markHello(em(this.orm), workerId, this.clock.date(), capacity, version, connectedAt)) === 'lost';
  }

  /** A heartbeat in a steady stream: noted, written with the next flush. */
  heartbeat(workerId: string): void {
    this.heard.set(workerId, this.clock.now());
  }

  /**
   * A heartbeat after a silence of WORKER_LOST_AFTER or more on its socket (a worker that was
   * frozen, e.g. SIGSTOP, with its socket up): written at once, as it may have been declared
   * lost meanwhile and its runs are waiting to be reclaimed. Returns true if it had been lost.
   */
  async heardAfterSilence(workerId: string): Promise<boolean> {
    this.heard.delete(workerId);
    return (await markHeard(em(this.orm), workerId, this.clock.date())) === 'lost';
  }

  /**
   * Writes every heartbeat heard before this call: one UPDATE of the workers heard, one of
   * their active shares' heartbeat time. On failure what was heard is kept (the newest beat
   * per worker) for the next flush, and the error is thrown to the caller.
   */
  flush(): Promise<void> {
    const next = this.tail.then(() => this.write());
    this.tail = next.catch(() => {});
    return next;
  }

  private async write(): Promise<void> {
    if (!this.heard.size) return;
    const batch = this.heard;
    this.heard = new Map();
    this.writing = true;
    // When each beat was received, on the clock: the flush's own delay never freshens a worker.
    const beats = JSON.stringify([...batch].map(([id, at]) => ({ id, at: new Date(at).toISOString() })));
    try {
      const back = await em(this.orm).transactional(async (tx) => {
        // Only a lost worker changes status here: an offline one (its socket left after the beat) stays offline.
        const rows = await writeHeard(tx, beats);
        return rows.filter((r) => r.was === 'lost').map((r) => r.id);
      });
      if (this.downSince !== null) {
        this.log.info({ outageMs: this.clock.now() - this.downSince }, 'heartbeat writes resumed');
        this.downSince = null;
      }
      for (const workerId of back) {
        this.options.onHeardAgain(workerId).catch((err: unknown) => this.log.error({ err, workerId }, 'could not reclaim the runs of a worker heard again'));
      }
    } catch (err) {
      // Newer beats heard meanwhile win; the others go back for the next flush.
      for (const [id, at] of batch) if (!this.heard.has(id)) this.heard.set(id, at);
      if (!isDatabaseUnavailable(err)) this.log.error({ err, pending: this.heard.size }, 'heartbeat flush failed');
      else if (this.downSince === null) {
        this.downSince = this.clock.now();
        this.log.error({ reason: (err as Error).message, pending: this.heard.size }, 'heartbeat writes paused: the database is unavailable');
      }
      throw err;
    } finally {
      this.writing = false;
    }
  }

  /**
   * The socket of the hello made at `connectedAt` left: offline, unless a newer hello (on
   * any node) replaced it meanwhile, or the sweeper already found it lost.
   */
  async left(workerId: string, connectedAt: Date): Promise<void> {
    await markOffline(em(this.orm), workerId, connectedAt);
  }
}
