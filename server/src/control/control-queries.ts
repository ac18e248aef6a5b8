import type { RunRow } from '../infra/db/entities.js';
import type { Em } from '../infra/db/orm.js';
import type { AuditAppendCall, Chained } from '../audit/audit-append.js';
import { mapRunForView, RUN_VIEW_COLUMNS, type RawRunForView, type RunForView } from '../runs/run-queries.js';

// Control changes as single statements: the run's update and its audit row together, the
// audit call (prepared with `c.id` as its run id) running once per changed row — no change,
// no audit row.

/** What a control command writes to the run. */
export interface ControlChange {
  controlState: string;
  controlMode: string | null;
  controlSeq: number;
  controlChangedAt: Date;
  controlBy: { id: string; name: string };
  controlCorrelationId: string;
  controllerId: string | null;
  handback: RunRow['handback'];
}

/** The run's new revision and where its audit row went in the chain. */
export type WrittenWithAudit = { revision: number } & Chained;

/**
 * Applies `change` (and, with `clearNeedsOperator`, ends the run's needs-operator request)
 * with its audit row, conditional on the control seq the caller read under the run's lock:
 * concurrent commands on any node apply one at a time, even against a writer that does not
 * lock — or, outside a transaction, against the row the caller read. The run must still be
 * assigned or running. Undefined when the seq moved or the run ended meanwhile (nothing written).
 */
export async function writeControlChange(
  tx: Em,
  runId: string,
  expectedSeq: number,
  change: ControlChange,
  clearNeedsOperator: boolean,
  audit: AuditAppendCall,
): Promise<WrittenWithAudit | undefined> {
  const [written] = await tx.execute<WrittenWithAudit[]>(
    `with c as (
       update runs set control_state = ?, control_mode = ?, control_seq = ?, control_changed_at = ?, control_by = ?::jsonb,
              control_correlation_id = ?, controller_id = ?, handback = ?::jsonb
              ${clearNeedsOperator ? ', needs_operator_reason = null, needs_operator_at = null' : ''}
        where id = ? and control_seq = ? and status in ('assigned', 'running')
       returning id, revision
     )
     select c.revision, a.chain_seq, a.chain_prev_hash, a.chain_hash from c cross join lateral ${audit.sql} a`,
    [
      change.controlState, change.controlMode, change.controlSeq, change.controlChangedAt, JSON.stringify(change.controlBy), change.controlCorrelationId, change.controllerId,
      change.handback ? JSON.stringify(change.handback) : null,
      runId, expectedSeq, ...audit.params,
    ],
  );
  return written;
}

/**
 * A pause or a resume decided on the run as this node last saw it (`seen`): the change and its
 * audit row (prepared with `r.id` as its run id), and the run's view read back, in one
 * autocommit statement — only if the run still is what the decision read: the same control seq
 * and state, assigned or running (its labels never change). Undefined otherwise, and nothing
 * written: the caller reads the run and decides again.
 */
export async function writeControlChangeAsSeen(
  tx: Em,
  runId: string,
  seen: { controlSeq: number; controlState: string },
  change: ControlChange,
  audit: AuditAppendCall,
): Promise<RunForView | undefined> {
  const [raw] = await tx.execute<Array<RawRunForView & Chained>>(
    `with c as (
       update runs set control_state = ?, control_mode = ?, control_seq = ?, control_changed_at = ?, control_by = ?::jsonb,
              control_correlation_id = ?, controller_id = ?, handback = ?::jsonb
        where id = ? and control_seq = ? and control_state = ? and status in ('assigned', 'running')
       returning *
     )
     select ${RUN_VIEW_COLUMNS}, a.chain_seq, a.chain_prev_hash, a.chain_hash from c r cross join lateral ${audit.sql} a`,
    [
      change.controlState, change.controlMode, change.controlSeq, change.controlChangedAt, JSON.stringify(change.controlBy), change.controlCorrelationId, change.controllerId,
      change.handback ? JSON.stringify(change.handback) : null,
      runId, seen.controlSeq, seen.controlState, ...audit.params,
    ],
  );
  return raw && mapRunForView(tx, audit.take(raw) as RawRunForView);
}

/**
 * Records that the worker applied control `seq` (with its audit row) if the run's applied seq
 * is behind it and its control seq has reached it; undefined when not (nothing written).
 */
export async function advanceAppliedSeq(tx: Em, runId: string, seq: number, audit: AuditAppendCall): Promise<WrittenWithAudit | undefined> {
  const [written] = await tx.execute<WrittenWithAudit[]>(
    `with c as (update runs set control_applied_seq = ? where id = ? and control_applied_seq < ? and control_seq >= ? returning id, revision)
     select c.revision, a.chain_seq, a.chain_prev_hash, a.chain_hash from c cross join lateral ${audit.sql} a`,
    [seq, runId, seq, seq, ...audit.params],
  );
  return written;
}

/** The run's current control change as its push named it (echoed by the worker's report). */
export interface PushedChange {
  runId: string;
  workerId: string;
  seq: number;
  changedAt: Date;
  correlationId: string;
}

/**
 * The worker applied the run's current change: its applied seq advanced, with its audit row,
 * and the run's view read back — one autocommit statement (`audit_append` locks the chain for
 * the statement). Only when the row still is what the push named: this worker's, assigned or
 * running, `seq` its control seq and not yet applied, `changedAt` and `correlationId` its
 * change's (so the audit row, built from them, says what the locked read would have said).
 * Undefined otherwise, and nothing written: the caller decides under the run's lock.
 */
export async function recordAppliedIfCurrent(tx: Em, pushed: PushedChange, audit: AuditAppendCall): Promise<RunForView | undefined> {
  const [raw] = await tx.execute<Array<RawRunForView & Chained>>(
    `with c as (
       update runs set control_applied_seq = ?
        where id = ? and worker_id = ? and status in ('assigned', 'running') and control_seq = ? and control_applied_seq < ?
          and control_changed_at = ? and control_correlation_id = ?
       returning *
     )
     select ${RUN_VIEW_COLUMNS}, a.chain_seq, a.chain_prev_hash, a.chain_hash from c r cross join lateral ${audit.sql} a`,
    [pushed.seq, pushed.runId, pushed.workerId, pushed.seq, pushed.seq, pushed.changedAt, pushed.correlationId, ...audit.params],
  );
  return raw && mapRunForView(tx, audit.take(raw) as RawRunForView);
}
