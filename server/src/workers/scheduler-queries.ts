import { RunSchema, type RunRow } from '../infra/db/entities.js';
import { rowOf, type Em } from '../infra/db/orm.js';
import { RunEvent, runTransition } from '../domain/run-machine.js';
import type { AuditAppendCall, Chained } from '../audit/audit-append.js';

/** A queued run older than the `runs` row being claimed (`runs_queue_idx`): the condition of claiming a likely head. */
export const OLDER_QUEUED = `select 1 from runs older where older.status = 'queued' and (older.created_at, older.id) < (runs.created_at, runs.id)`;

/** What a claim found. */
export interface ClaimRow {
  /** The run claimed for the worker (as written: assigned to it), if any. */
  run: RunRow | null;
  /** Whether a queued run was there to take (false: the queue is empty, or every queued run is being claimed elsewhere). */
  queued: boolean;
}

/**
 * The oldest queued run, given to the worker (assigned) only if the database agrees it has room
 * (fewer than `capacity` assigned or running runs), with its `run.assign` audit row (`auditFor`
 * prepares it for the run's id; its hash covers the id, so it is known before the write): a read
 * of the queue's head, then one conditional statement that claims it and appends the row — no
 * change, no audit row; no transaction around them. A claim another node won in between is
 * read again (each loss means the queue lost a run). The claimed row comes back as written (its
 * new revision included), so the push needs no second read.
 *
 * `likely`: a run this node just created, most likely the head. It is claimed without the read,
 * on the further condition that no older run is queued (`runs_queue_idx` again): one
 * round trip on a new run's way to its worker. When an older run waits, or another node took
 * it, the head is read as above — first in, first out either way.
 */
export async function claimOldestQueued(tx: Em, workerId: string, capacity: number, auditFor: (runId: string) => AuditAppendCall, likely: string | null = null): Promise<ClaimRow> {
  let guess = likely;
  for (;;) {
    let next = guess;
    if (!next) {
      // runs_queue_idx: the head of the queue, not a scan.
      const [head] = await tx.execute<{ id: string }[]>(`select id from runs where status = 'queued' order by created_at, id limit 1`);
      if (!head) return { run: null, queued: false };
      next = head.id;
    }
    const audit = auditFor(next);
    const [row] = await tx.execute<{ run: Record<string, unknown> | null; room: boolean; chained: Chained | null }[]>(
      `with room as (select (select count(*) from runs where worker_id = ? and status in ('assigned', 'running')) < ? as room),
            claimed as (
              update runs set status = ?, worker_id = ?, assigned_at = now()
               where id = ? and status = 'queued' and (select room from room)${guess ? ` and not exists (${OLDER_QUEUED})` : ''}
              returning *)
       select (select row_to_json(claimed) from claimed) as run, (select room from room) as room,
              (select row_to_json(a) from claimed c cross join lateral ${audit.sql} a) as chained`,
      [workerId, capacity, runTransition('queued', RunEvent.assign), workerId, next, ...audit.params],
    );
    guess = null;
    if (row?.run && row.chained) {
      audit.row(row.chained);
      return { run: rowOf(tx, RunSchema, row.run), queued: true };
    }
    // No room on this worker: the run stays queued for another.
    if (!row?.room) return { run: null, queued: true };
    // Claimed elsewhere meanwhile, or (the likely run) an older one waits: the head, read.
  }
}
