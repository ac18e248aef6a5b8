import type { Clock, TimerHandle } from '@handoff/shared';
import type { Logger } from 'pino';
import { LiveSessionSchema, type LiveSessionRow } from '../infra/db/entities.js';
import { em, type Orm } from '../infra/db/orm.js';
import { SessionEvent } from '../domain/live-session-machine.js';
import { appendAudit, SYSTEM } from '../audit/audit-append.js';
import type { Leadership } from '../infra/leader.js';
import type { LiveSessionService } from '../sessions/live-session-service.js';
import type { Notifier } from '../hooks/notifier.js';
import type { RunService } from '../runs/run-service.js';
import { sessionView } from '../views.js';
import { isDatabaseUnavailable } from '../errors.js';
import {
  abandonedRuns,
  anyWorkerSilent,
  expiredSessions,
  graceWarningsDue,
  lockIfStillExpired,
  lockWorkerIfLost,
  loseAbandonedRun,
  loseSilentWorkers,
  markGraceWarned,
  stuckStarts,
} from './sweeper-queries.js';

export interface SweeperOptions {
  /** How often the leader sweeps, ms. Default 500. */
  intervalMs: number;
  graceMs: number;
  startTimeoutMs: number;
  /** WORKER_LOST_AFTER: a worker not heard from this long is `lost` (its shares go ERROR), ms. */
  workerLostAfterMs: number;
  /** WORKER_RECLAIM_GRACE: a lost worker's runs stay `running` this much longer, then they are `lost`, ms. */
  reclaimGraceMs: number;
  /**
   * Writes every heartbeat any hub node has heard but not yet written (each node batches
   * them, see WorkerPresence). Called only when some worker looks silent in the database,
   * before it is judged: liveness is what a node received, not what it managed to write.
   */
  flushHeard?: () => Promise<void>;
  /** Further time-driven chores of other services (e.g. approval expiry), run each sweep. */
  chores?: Array<() => Promise<void>>;
}

/**
 * Time-driven transitions, run by one leader at a time: grace warnings, TTL expiry,
 * shares that never started, lost workers. Each selects candidates and applies them as
 * conditional updates, so a second sweeper (or a racing extend) can never double-apply.
 * Share and approval deadlines are compared with the database clock; a share's start and
 * worker liveness with the injected clock, which also stamps the share's creation and every
 * heartbeat (docs/decisions.md, "Worker liveness on the hub's clock").
 */
export class Sweeper {
  private timer: TimerHandle | null = null;
  /** The sweep in progress, if any. */
  private sweeping: Promise<void> | null = null;
  /** The one sweep queued behind it for explicit `tick()` callers. */
  private queued: Promise<void> | null = null;
  /** When the database outage that failed the sweeps began (logged once, not per tick). */
  private dbDownSince: number | null = null;
  /** When the database came back after an outage: no worker is judged silent until WORKER_LOST_AFTER later. */
  private dbBackAt: number | null = null;
  private readonly leadership: Leadership;
  /**
   * When this node's current leadership began (the injected clock); null while it does not
   * lead. Silence is judged only from what this leader could have heard: a node that just
   * took over (hub restart, failover) declares nobody lost before it led WORKER_LOST_AFTER.
   */
  private leaderSince: Date | null = null;

  constructor(
    private readonly orm: Orm,
    private readonly sessions: LiveSessionService,
    private readonly runs: RunService,
    private readonly notifier: Notifier,
    leadership: Leadership,
    private readonly log: Logger,
    private readonly clock: Clock,
    private readonly options: SweeperOptions,
  ) {
    this.leadership = {
      isLeader: async () => {
        const leads = await leadership.isLeader();
        if (!leads) this.leaderSince = null;
        return leads;
      },
      release: async () => {
        this.leaderSince = null;
        await leadership.release();
      },
    };
  }

  start(): void {
    if (this.timer) return;
    // A timer tick that finds a sweep still running is skipped: a slow sweep (a slow
    // database) must not pile up ticks that then run back to back.
    this.timer = this.clock
      .setInterval(() => {
        if (!this.sweeping) void this.tick();
      }, this.options.intervalMs)
      .unref();
  }

  /** Stops ticking, waits for the sweep in progress, and hands the lease over at once. */
  async stop(): Promise<void> {
    this.timer?.cancel();
    this.timer = null;
    await this.sweeping;
    await this.queued;
    await this.leadership.release().catch(() => {});
  }

  /**
   * One sweep if this node leads, started after the current one (sweeps never overlap on a
   * node). Callers that arrive while a sweep runs share one queued sweep, so explicit
   * ticks are bounded too.
   */
  tick(): Promise<void> {
    if (this.sweeping) {
      this.queued ??= this.sweeping.then(() => {
        this.queued = null;
        return this.tick();
      });
      return this.queued;
    }
    const sweep = this.sweepOnce().finally(() => {
      this.sweeping = null;
    });
    this.sweeping = sweep;
    return sweep;
  }

  private async sweepOnce(): Promise<void> {
    try {
      if (!(await this.leadership.isLeader())) return;
      await this.graceWarnings();
      await this.expire();
      await this.failStuckStarts();
      // Nobody could record a heartbeat while the database was down: silence is counted
      // from its return, or every worker would look lost (and its healthy runs with it).
      const silenceCounts = this.dbDownSince === null && (this.dbBackAt === null || this.clock.now() - this.dbBackAt >= this.options.workerLostAfterMs);
      if (silenceCounts) {
        this.dbBackAt = null;
        await this.loseSilentWorkers();
        await this.loseAbandonedRuns();
      }
      for (const chore of this.options.chores ?? []) await chore();
      if (this.dbDownSince !== null) {
        this.log.info({ outageMs: this.clock.now() - this.dbDownSince }, 'sweeps resumed: the database is back');
        this.dbDownSince = null;
        this.dbBackAt = this.clock.now();
      }
    } catch (err) {
      if (!isDatabaseUnavailable(err)) this.log.error({ err }, 'sweep failed');
      else if (this.dbDownSince === null) {
        // An outage is one event: logged when it starts and when it ends, not every tick.
        this.dbDownSince = this.clock.now();
        this.log.error({ reason: (err as Error).message }, 'sweeps paused: the database is unavailable');
      }
    }
  }

  /** Grace warning for one session right away (a TTL shorter than LIVE_GRACE warns at once). */
  async graceWarnings(sessionId?: string): Promise<void> {
    const rows = await graceWarningsDue(em(this.orm), this.options.graceMs, sessionId);
    for (const { id } of rows) {
      // The mark and its audit row (and so its webhook event) commit together: a crash between them loses neither.
      const s = await em(this.orm).transactional(async (tx) => {
        if (!(await markGraceWarned(tx, id, this.options.graceMs))) return null;
        const row = await tx.findOneOrFail(LiveSessionSchema, { id }, { refresh: true });
        await appendAudit(tx, { runId: row.runId, sessionId: row.id, correlationId: row.correlationId, actor: SYSTEM, action: 'session.grace', metadata: { expiresAt: row.expiresAt.toISOString() } }, this.clock.date());
        return row;
      });
      if (!s) continue;
      this.notifier.sessionGrace(sessionView(s));
      this.notifier.sessionUpdated(sessionView(s));
    }
  }

  /** The sessions of `ids` (a candidate query's answer), read whole. */
  private async candidates(ids: { id: string }[]): Promise<LiveSessionRow[]> {
    return ids.length ? em(this.orm).find(LiveSessionSchema, { id: { $in: ids.map((r) => r.id) } }) : [];
  }

  private async expire(): Promise<void> {
    for (const s of await this.candidates(await expiredSessions(em(this.orm)))) {
      const row = await em(this.orm).transactional(async (tx) => {
        // Re-check by the database clock inside the conditional update: an extend that
        // committed first wins, and this sweep then changes nothing.
        if (!(await lockIfStillExpired(tx, s.id, s.status))) return null;
        return this.sessions.transitionIn(tx, s, SessionEvent.end, { endReason: 'ttl' }, SYSTEM, 'session.expire');
      });
      if (row) this.sessions.afterEnd(row, 'ttl');
    }
  }

  private async failStuckStarts(): Promise<void> {
    // The worker has the start timeout itself; this catches a worker that never answered.
    // `start_requested_at` is stamped from the injected clock, so the cutoff is that clock's time too.
    const cutoff = new Date(this.clock.now() - (this.options.startTimeoutMs + 5000));
    const stuck = await this.candidates(await stuckStarts(em(this.orm), cutoff));
    for (const s of stuck) {
      const message = `share did not start within ${Math.round(this.options.startTimeoutMs / 1000)}s (no answer from the worker)`;
      const row = await em(this.orm).transactional((tx) => this.sessions.transitionIn(tx, s, SessionEvent.fail, { errorMessage: message, endReason: 'error' }, SYSTEM, 'session.error', { message }));
      if (row) this.sessions.afterEnd(row, 'start timeout');
    }
  }

  /** Effective "last heard" floor: the start of this node's leadership (the injected clock). */
  private ledSince(): number {
    this.leaderSince ??= this.clock.date();
    return this.leaderSince.getTime();
  }

  /**
   * The time (the injected clock − `forMs`) before which a worker last heard has been silent
   * for `forMs`; null when this node has not led that long, so nobody can have been silent
   * for it as far as it knows.
   */
  private silenceCutoff(forMs: number): Date | null {
    const now = this.clock.now();
    return this.ledSince() < now - forMs ? new Date(now - forMs) : null;
  }

  /**
   * Workers silent for WORKER_LOST_AFTER become `lost` and their shares go ERROR (nobody
   * can watch through them). Their runs keep running for WORKER_RECLAIM_GRACE: a worker
   * heard again in time re-adopts them (see loseAbandonedRuns).
   */
  private async loseSilentWorkers(): Promise<void> {
    // greatest(last_heartbeat_at, leaderSince) < cutoff: the floor is checked here, the rest
    // in the database. The cutoff is this clock's time; the update still decides each row
    // atomically against a heartbeat committed meanwhile.
    const cutoff = this.silenceCutoff(this.options.workerLostAfterMs);
    if (!cutoff) return;
    // Usually nobody is silent: one indexed probe (workers_heard_idx), and no node is asked anything.
    if (!(await anyWorkerSilent(em(this.orm), cutoff))) return;
    // A beat may be waiting in some node's batch: every node writes what it heard, then the
    // conditional update below judges on what was received.
    await this.options.flushHeard?.();
    const lost = await loseSilentWorkers(em(this.orm), cutoff);
    if (!lost.length) return;
    for (const { id: workerId } of lost) this.log.warn({ workerId }, 'worker lost: no heartbeat; its runs wait for it for WORKER_RECLAIM_GRACE');
    // Their active shares in one read: a fleet lost at once (a network split) is not a query per worker.
    const shares = await em(this.orm).find(LiveSessionSchema, { workerId: { $in: lost.map((w) => w.id) }, status: { $in: ['STARTING', 'READY'] } });
    for (const s of shares) {
      const row = await em(this.orm).transactional(async (tx) => {
        // Heard again meanwhile (its reclaim may already have checked the run's shares): leave them.
        if (!(await lockWorkerIfLost(tx, s.workerId!))) return null;
        return this.sessions.transitionIn(tx, s, SessionEvent.fail, { errorMessage: 'worker lost', endReason: 'worker-lost' }, SYSTEM, 'session.error', { message: 'worker lost' });
      });
      if (row) this.sessions.afterEnd(row, 'worker lost');
    }
  }

  /**
   * A run whose worker has been silent for WORKER_LOST_AFTER + WORKER_RECLAIM_GRACE is
   * `lost`, and the worker is told to stop it (in case it is alive somewhere; its
   * dead-man switch stops it otherwise). The update re-checks the worker's silence, so a
   * heartbeat that committed first keeps the run.
   */
  private async loseAbandonedRuns(): Promise<void> {
    const cutoff = this.silenceCutoff(this.options.workerLostAfterMs + this.options.reclaimGraceMs);
    if (!cutoff) return;
    const candidates = await abandonedRuns(em(this.orm), cutoff);
    // A lost worker's beat may be waiting in some node's batch: written first, so the update below sees it.
    if (candidates.length) await this.options.flushHeard?.();
    for (const { id: runId, worker_id: workerId } of candidates) {
      const at = this.clock.date();
      const lost = await em(this.orm).transactional(async (tx) => {
        if (!(await loseAbandonedRun(tx, runId, workerId, at, cutoff))) return false;
        await appendAudit(tx, { runId, actor: SYSTEM, action: 'run.lost', metadata: { workerId, reason: 'reclaim-grace-passed' } }, at);
        return true;
      });
      if (!lost) continue;
      this.log.warn({ runId, workerId }, 'run lost: its worker did not come back within WORKER_RECLAIM_GRACE');
      this.notifier.cancelOnWorker(workerId, runId);
      await this.sessions.endAllForRun(runId, 'run-lost', 'ERROR');
      await this.runs.publish(runId);
    }
  }
}
