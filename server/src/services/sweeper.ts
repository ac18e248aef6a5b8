import type { Logger } from 'pino';
import { LiveSessionSchema, type LiveSessionRow } from '../db/entities.js';
import { em, type Orm } from '../db/orm.js';
import { RunEvent, runStatesAllowing, runTransition } from '../domain/run-machine.js';
import { SessionEvent } from '../domain/live-session-machine.js';
import { appendAudit, SYSTEM } from './audit.js';
import type { Leadership } from './leader.js';
import type { LiveSessionService } from './live-sessions.js';
import type { Notifier } from './notifier.js';
import type { RunService } from './runs.js';
import { sessionView } from './views.js';
import { isDatabaseUnavailable } from '../errors.js';

export interface SweeperOptions {
  /** How often the leader sweeps, ms. Default 500. */
  intervalMs: number;
  graceMs: number;
  startTimeoutMs: number;
  /** WORKER_LOST_AFTER: a worker not heard from this long is `lost` (its shares go ERROR), ms. */
  workerLostAfterMs: number;
  /** WORKER_RECLAIM_GRACE: a lost worker's runs stay `running` this much longer, then they are `lost`, ms. */
  reclaimGraceMs: number;
  /** Further time-driven chores of other services (e.g. approval expiry), run each sweep. */
  chores?: Array<() => Promise<void>>;
}

/**
 * Time-driven transitions, run by one leader at a time: grace warnings, TTL expiry,
 * shares that never started, lost workers. Each selects candidates by the database
 * clock and applies them as conditional updates, so a second sweeper (or a racing
 * extend) can never double-apply.
 */
export class Sweeper {
  private timer: NodeJS.Timeout | null = null;
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
   * When this node's current leadership began (database clock); null while it does not
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
    this.timer = setInterval(() => {
      if (!this.sweeping) void this.tick();
    }, this.options.intervalMs);
    this.timer.unref();
  }

  /** Stops ticking, waits for the sweep in progress, and hands the lease over at once. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
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
      const silenceCounts = this.dbDownSince === null && (this.dbBackAt === null || Date.now() - this.dbBackAt >= this.options.workerLostAfterMs);
      if (silenceCounts) {
        this.dbBackAt = null;
        await this.loseSilentWorkers();
        await this.loseAbandonedRuns();
      }
      for (const chore of this.options.chores ?? []) await chore();
      if (this.dbDownSince !== null) {
        this.log.info({ outageMs: Date.now() - this.dbDownSince }, 'sweeps resumed: the database is back');
        this.dbDownSince = null;
        this.dbBackAt = Date.now();
      }
    } catch (err) {
      if (!isDatabaseUnavailable(err)) this.log.error({ err }, 'sweep failed');
      else if (this.dbDownSince === null) {
        // An outage is one event: logged when it starts and when it ends, not every tick.
        this.dbDownSince = Date.now();
        this.log.error({ reason: (err as Error).message }, 'sweeps paused: the database is unavailable');
      }
    }
  }

  /** Grace warning for one session right away (a TTL shorter than LIVE_GRACE warns at once). */
  async graceWarnings(sessionId?: string): Promise<void> {
    const rows = await em(this.orm).execute<{ id: string }[]>(
      `update live_sessions set grace_warned_at = now()
        where status in ('STARTING','READY') and grace_warned_at is null
          and expires_at - (? * interval '1 millisecond') <= now() ${sessionId ? 'and id = ?' : ''}
        returning id`,
      sessionId ? [this.options.graceMs, sessionId] : [this.options.graceMs],
    );
    for (const { id } of rows) {
      const s = await em(this.orm).findOneOrFail(LiveSessionSchema, { id });
      await em(this.orm).transactional((tx) =>
        appendAudit(tx, { runId: s.runId, sessionId: s.id, correlationId: s.correlationId, actor: SYSTEM, action: 'session.grace', metadata: { expiresAt: s.expiresAt.toISOString() } }),
      );
      this.notifier.sessionGrace(sessionView(s));
      this.notifier.sessionUpdated(sessionView(s));
    }
  }

  private async candidates(where: string, params: unknown[]): Promise<LiveSessionRow[]> {
    const ids = await em(this.orm).execute<{ id: string }[]>(`select id from live_sessions where status in ('STARTING','READY') and ${where}`, params);
    return ids.length ? em(this.orm).find(LiveSessionSchema, { id: { $in: ids.map((r) => r.id) } }) : [];
  }

  private async expire(): Promise<void> {
    for (const s of await this.candidates('expires_at <= now()', [])) {
      const row = await em(this.orm).transactional(async (tx) => {
        // Re-check by the database clock inside the conditional update: an extend that
        // committed first wins, and this sweep then changes nothing.
        const still = await tx.execute<{ id: string }[]>(`select id from live_sessions where id = ? and status = ? and expires_at <= now() for update`, [s.id, s.status]);
        if (!still.length) return null;
        return this.sessions.transitionIn(tx, s, SessionEvent.end, { endReason: 'ttl' }, SYSTEM, 'session.expire');
      });
      if (row) this.sessions.afterEnd(row, 'ttl');
    }
  }

  private async failStuckStarts(): Promise<void> {
    // The worker has the start timeout itself; this catches a worker that never answered.
    const stuck = await this.candidates(`status = 'STARTING' and provider <> 'web' and created_at < now() - (? * interval '1 millisecond')`, [this.options.startTimeoutMs + 5000]);
    for (const s of stuck) {
      const message = `share did not start within ${Math.round(this.options.startTimeoutMs / 1000)}s (no answer from the worker)`;
      const row = await em(this.orm).transactional((tx) => this.sessions.transitionIn(tx, s, SessionEvent.fail, { errorMessage: message, endReason: 'error' }, SYSTEM, 'session.error', { message }));
      if (row) this.sessions.afterEnd(row, 'start timeout');
    }
  }

  /** Effective "last heard" floor: the start of this node's leadership (database clock). */
  private async ledSince(): Promise<Date> {
    if (!this.leaderSince) {
      const [row] = await em(this.orm).execute<{ now: Date }[]>('select now() as now');
      this.leaderSince = new Date(row!.now);
    }
    return this.leaderSince;
  }

  /**
   * Workers silent for WORKER_LOST_AFTER become `lost` and their shares go ERROR (nobody
   * can watch through them). Their runs keep running for WORKER_RECLAIM_GRACE: a worker
   * heard again in time re-adopts them (see loseAbandonedRuns).
   */
  private async loseSilentWorkers(): Promise<void> {
    const since = await this.ledSince();
    const lost = await em(this.orm).execute<{ id: string }[]>(
      `update workers set status = 'lost'
        where status in ('online','offline') and greatest(last_heartbeat_at, ?::timestamptz) < now() - (? * interval '1 millisecond')
        returning id`,
      [since, this.options.workerLostAfterMs],
    );
    for (const { id: workerId } of lost) {
      this.log.warn({ workerId }, 'worker lost: no heartbeat; its runs wait for it for WORKER_RECLAIM_GRACE');
      const sessions = await em(this.orm).find(LiveSessionSchema, { workerId, status: { $in: ['STARTING', 'READY'] } });
      for (const s of sessions) {
        const row = await em(this.orm).transactional(async (tx) => {
          // Heard again meanwhile (its reclaim may already have checked the run's shares): leave them.
          const still = await tx.execute(`select 1 from workers where id = ? and status = 'lost' for share`, [workerId]);
          if (!still.length) return null;
          return this.sessions.transitionIn(tx, s, SessionEvent.fail, { errorMessage: 'worker lost', endReason: 'worker-lost' }, SYSTEM, 'session.error', { message: 'worker lost' });
        });
        if (row) this.sessions.afterEnd(row, 'worker lost');
      }
    }
  }

  /**
   * A run whose worker has been silent for WORKER_LOST_AFTER + WORKER_RECLAIM_GRACE is
   * `lost`, and the worker is told to stop it (in case it is alive somewhere; its
   * dead-man switch stops it otherwise). The update re-checks the worker's silence, so a
   * heartbeat that committed first keeps the run.
   */
  private async loseAbandonedRuns(): Promise<void> {
    const since = await this.ledSince();
    const abandonedFor = this.options.workerLostAfterMs + this.options.reclaimGraceMs;
    const silent = `exists (select 1 from workers w where w.id = r.worker_id and w.status = 'lost'
                      and greatest(w.last_heartbeat_at, ?::timestamptz) < now() - (? * interval '1 millisecond'))`;
    const from = runStatesAllowing(RunEvent.lose);
    const candidates = await em(this.orm).execute<{ id: string; worker_id: string }[]>(
      `select r.id, r.worker_id from runs r where r.status in (${from.map(() => '?').join(', ')}) and ${silent}`,
      [...from, since, abandonedFor],
    );
    for (const { id: runId, worker_id: workerId } of candidates) {
      const lost = await em(this.orm).transactional(async (tx) => {
        const rows = await tx.execute<{ id: string }[]>(
          `update runs r set status = ?, ended_at = now(), error_message = 'worker lost: not back within WORKER_RECLAIM_GRACE'
            where r.id = ? and r.worker_id = ? and r.status in (${from.map(() => '?').join(', ')}) and ${silent}
            returning r.id`,
          [runTransition('running', RunEvent.lose), runId, workerId, ...from, since, abandonedFor],
        );
        if (!rows.length) return false;
        await appendAudit(tx, { runId, actor: SYSTEM, action: 'run.lost', metadata: { workerId, reason: 'reclaim-grace-passed' } });
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
