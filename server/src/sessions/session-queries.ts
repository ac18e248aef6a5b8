import { LiveSessionSchema, type LiveSessionRow } from '../infra/db/entities.js';
import { rowOf, type Em } from '../infra/db/orm.js';
import type { AuditAppendCall, Chained } from '../audit/audit-append.js';

// Live sessions' raw SQL: the per-run lock of creates, the per-worker share count, and the
// conditional extension that races the expiry sweep.

/** Takes the run's session lock for the rest of the transaction: creates of one run serialize. */
export async function lockRunSessions(tx: Em, runId: string): Promise<void> {
  await tx.execute('select pg_advisory_xact_lock(hashtextextended(?, 0))', [`sessions:${runId}`]);
}

/** How many external shares (tmate, upterm) the worker serves, STARTING or READY. */
export async function activeExternalSharesOf(tx: Em, workerId: string): Promise<number> {
  const [{ n } = { n: 0 }] = await tx.execute<{ n: number }[]>(
    `select count(*)::int as n from live_sessions where worker_id = ? and provider in ('tmate','upterm') and status in ('STARTING','READY')`,
    [workerId],
  );
  return n;
}

/**
 * Moves the session's expiry to `ttlMs` from now (and re-arms its grace warning) if it is
 * STARTING or READY and not expired: false when it is not. One statement decides the race
 * with the expiry sweep: both compare against now().
 */
export async function extendIfLive(tx: Em, sessionId: string, ttlMs: number): Promise<boolean> {
  const updated = await tx.execute<{ id: string }[]>(
    `update live_sessions set expires_at = now() + (? * interval '1 millisecond'), grace_warned_at = null
      where id = ? and status in ('STARTING','READY') and expires_at > now() returning id`,
    [ttlMs, sessionId],
  );
  return updated.length > 0;
}

/** The default web share a run gets when it starts. */
export interface StartWebShare {
  id: string;
  runId: string;
  correlationId: string;
  createdBy: string;
  at: Date;
  expiresAt: Date;
}

/**
 * The run's web share, READY at once (the hub itself serves it), with its `session.create` and
 * `session.ready` audit rows, in one autocommit statement: only while the run is running and
 * has no active web share (the partial unique index decides a race with a create through the
 * API). The audit calls are prepared with `s.run_id` and `?` as their run id; the second is
 * appended after the first (it reads the first's rows), so the chain keeps their order.
 * Undefined when nothing was written.
 */
export async function insertStartWebShare(tx: Em, share: StartWebShare, created: AuditAppendCall, ready: AuditAppendCall): Promise<LiveSessionRow | undefined> {
  const [row] = await tx.execute<{ session: Record<string, unknown>; created: Chained; ready: Chained }[]>(
    `with s as (
       insert into live_sessions (id, run_id, provider, status, worker_id, correlation_id, created_by, created_at, ready_at, ended_at, expires_at,
                                  grace_warned_at, last_heartbeat_at, start_requested_at, end_reason, error_message, attach_ro, attach_rw_enc)
       select ?, r.id, 'web', 'READY', r.worker_id, ?, ?, ?, ?, null, ?, null, ?, null, null, null, null, null
         from runs r where r.id = ? and r.status = 'running'
       on conflict (run_id, provider) where status in ('STARTING', 'READY') do nothing
       returning *
     ),
     created as (select a.* from s cross join lateral ${created.sql} a),
     ready as (select a.* from created cross join lateral ${ready.sql} a)
     select row_to_json(s) as session, row_to_json(created) as created, row_to_json(ready) as ready from s, created, ready`,
    [share.id, share.correlationId, share.createdBy, share.at, share.at, share.expiresAt, share.at, share.runId, ...created.params, ...ready.params],
  );
  if (!row) return undefined;
  created.row(row.created);
  ready.row(row.ready);
  return rowOf(tx, LiveSessionSchema, row.session);
}
