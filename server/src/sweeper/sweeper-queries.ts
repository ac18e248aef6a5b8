import type { Em } from '../infra/db/orm.js';
import { RunEvent, runStatesAllowing, runTransition } from '../domain/run-machine.js';

// The sweeper's raw SQL: candidate selections, and the conditional updates that re-check each
// candidate so a second sweeper (or a racing extend or heartbeat) can never double-apply.
// Share expiry and grace warnings are judged on the database clock (`now()`); a share's start
// and worker liveness on the injected clock, through a cutoff passed as `?::timestamptz`
// (docs/decisions.md, "Worker liveness on the hub's clock").

// ── live sessions ─────────────────────────────────────────────────────────────

/** An active session within `graceMs` (param) of its expiry and not yet warned, by the database clock. */
const GRACE_DUE = `status in ('STARTING','READY') and grace_warned_at is null and expires_at - (? * interval '1 millisecond') <= now()`;

/** The sessions due a grace warning (`GRACE_DUE`), or only `sessionId` if it is due. */
export async function graceWarningsDue(tx: Em, graceMs: number, sessionId?: string): Promise<{ id: string }[]> {
  return tx.execute<{ id: string }[]>(`select id from live_sessions where ${GRACE_DUE} ${sessionId ? 'and id = ?' : ''}`, sessionId ? [graceMs, sessionId] : [graceMs]);
}

/** Marks the session grace-warned if it is still due (`GRACE_DUE`): false when it is not (warned already, extended, ended). */
export async function markGraceWarned(tx: Em, sessionId: string, graceMs: number): Promise<boolean> {
  const marked = await tx.execute<{ id: string }[]>(`update live_sessions set grace_warned_at = now() where id = ? and ${GRACE_DUE} returning id`, [sessionId, graceMs]);
  return marked.length > 0;
}

/** Active (STARTING or READY) sessions past their expiry by the database clock. */
export async function expiredSessions(tx: Em): Promise<{ id: string }[]> {
  return tx.execute<{ id: string }[]>(`select id from live_sessions where status in ('STARTING','READY') and expires_at <= now()`);
}

/**
 * Locks the session (`for update`) if it is still in `status` and past its expiry by the
 * database clock: false when it is not (an extend that committed first wins).
 */
export async function lockIfStillExpired(tx: Em, sessionId: string, status: string): Promise<boolean> {
  const still = await tx.execute<{ id: string }[]>(`select id from live_sessions where id = ? and status = ? and expires_at <= now() for update`, [sessionId, status]);
  return still.length > 0;
}

/**
 * External shares (not `web`) still STARTING that a worker was asked to start before `cutoff`
 * (the sweeper's clock − the start timeout − a margin; `start_requested_at` is stamped from
 * the same clock by the session service when it asks; a share no worker was asked for yet —
 * its run is still queued — is not judged). Only active sessions are read, through a partial index whose predicate is
 * the status filter (live_sessions_worker_active_idx or _one_active_idx; EXPLAIN in
 * test/integration/hub-scale.test.ts).
 */
export const STUCK_STARTS = `select id from live_sessions where status in ('STARTING','READY') and status = 'STARTING' and provider <> 'web' and start_requested_at < ?::timestamptz`;

/** The sessions of `STUCK_STARTS`. */
export async function stuckStarts(tx: Em, cutoff: Date): Promise<{ id: string }[]> {
  return tx.execute<{ id: string }[]>(STUCK_STARTS, [cutoff]);
}

// ── workers ───────────────────────────────────────────────────────────────────

/**
 * A live worker (the predicate of workers_heard_idx) not heard since the cutoff (param: the
 * sweeper's clock − WORKER_LOST_AFTER; `last_heartbeat_at` is stamped from the hubs' clocks
 * by WorkerPresence).
 */
export const SILENT_WORKER = `status in ('online','offline') and (last_heartbeat_at is null or last_heartbeat_at < ?::timestamptz)`;

/**
 * Whether any worker is silent (param: the cutoff): the oldest live heartbeat, and whether a
 * live worker was never heard — one descent of workers_heard_idx each, however many workers
 * there are. Not `exists (… SILENT_WORKER)`: with the cutoff a value, the planner estimates
 * from the whole column (mostly long-lost workers) that many live rows match, and scans the
 * table for the first of them; when none does, which is nearly always, that is every row.
 */
export const SILENT_WORKER_PROBE = `select coalesce((select min(last_heartbeat_at) from workers where status in ('online','offline')) < ?::timestamptz, false)
           or exists (select 1 from workers where status in ('online','offline') and last_heartbeat_at is null) as any`;

/** Every silent worker (`SILENT_WORKER`, param: the cutoff) becomes `lost`; returns their ids. */
export const LOSE_SILENT_WORKERS = `update workers set status = 'lost' where ${SILENT_WORKER} returning id`;

/** Whether any worker is silent since `cutoff` (`SILENT_WORKER_PROBE`). */
export async function anyWorkerSilent(tx: Em, cutoff: Date): Promise<boolean> {
  const [probe] = await tx.execute<{ any: boolean }[]>(SILENT_WORKER_PROBE, [cutoff]);
  return Boolean(probe?.any);
}

/**
 * Marks `lost` every worker silent since `cutoff` (`LOSE_SILENT_WORKERS`): one conditional
 * update, so a heartbeat committed meanwhile keeps its worker. Returns the ids it marked.
 */
export async function loseSilentWorkers(tx: Em, cutoff: Date): Promise<{ id: string }[]> {
  return tx.execute<{ id: string }[]>(LOSE_SILENT_WORKERS, [cutoff]);
}

/**
 * Whether the worker is still `lost`, holding its row (`for share`) for the rest of the
 * transaction: false when it was heard again meanwhile (its reclaim may already have checked
 * the run's shares).
 */
export async function lockWorkerIfLost(tx: Em, workerId: string): Promise<boolean> {
  const still = await tx.execute(`select 1 from workers where id = ? and status = 'lost' for share`, [workerId]);
  return still.length > 0;
}

// ── runs of lost workers ──────────────────────────────────────────────────────

/** The run's worker (alias `r`) is `lost` and silent since the cutoff (param). */
const RUN_WORKER_SILENT = `exists (select 1 from workers w where w.id = r.worker_id and w.status = 'lost'
                      and (w.last_heartbeat_at is null or w.last_heartbeat_at < ?::timestamptz))`;

/** Runs a `lose` event may apply to whose worker is lost and silent since `cutoff`. */
export async function abandonedRuns(tx: Em, cutoff: Date): Promise<{ id: string; worker_id: string }[]> {
  const from = runStatesAllowing(RunEvent.lose);
  return tx.execute<{ id: string; worker_id: string }[]>(
    `select r.id, r.worker_id from runs r where r.status in (${from.map(() => '?').join(', ')}) and ${RUN_WORKER_SILENT}`,
    [...from, cutoff],
  );
}

/**
 * The run becomes `lost` (ended at `endedAt`) if it is still on `workerId`, in a state the
 * `lose` event allows, and its worker still lost and silent since `cutoff`: false when not (a
 * heartbeat that committed first keeps the run).
 */
export async function loseAbandonedRun(tx: Em, runId: string, workerId: string, endedAt: Date, cutoff: Date): Promise<boolean> {
  const from = runStatesAllowing(RunEvent.lose);
  const rows = await tx.execute<{ id: string }[]>(
    `update runs r set status = ?, ended_at = ?, error_message = 'worker lost: not back within WORKER_RECLAIM_GRACE'
      where r.id = ? and r.worker_id = ? and r.status in (${from.map(() => '?').join(', ')}) and ${RUN_WORKER_SILENT}
      returning r.id`,
    [runTransition('running', RunEvent.lose), endedAt, runId, workerId, ...from, cutoff],
  );
  return rows.length > 0;
}
