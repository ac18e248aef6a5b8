import { RunSchema, type RunRow } from '../infra/db/entities.js';
import type { Em } from '../infra/db/orm.js';
import { RunEvent, runTransition } from '../domain/run-machine.js';

/** What a claim found. */
export interface ClaimRow {
  /** The run claimed for the worker (as written: assigned to it), if any. */
  run: RunRow | null;
  /** Whether a queued run was there to take (false: the queue is empty, or every queued run is being claimed elsewhere). */
  queued: boolean;
}

/**
 * One statement: the oldest queued run nobody else is claiming, given to the worker (assigned)
 * only if the database agrees it has room (fewer than `capacity` assigned or running runs).
 * The CTE is evaluated once (referenced twice). The claimed row comes back as written (its
 * new revision included), so the push needs no second read.
 */
export async function claimOldestQueued(tx: Em, workerId: string, capacity: number): Promise<ClaimRow> {
  const [row] = await tx.execute<{ run: Record<string, unknown> | null; queued: boolean }[]>(
    `with next as (select id from runs where status = 'queued' order by created_at, id limit 1 for update skip locked),
          claimed as (
            update runs set status = ?, worker_id = ?, assigned_at = now()
             where id = (select id from next) and status = 'queued'
               and (select count(*) from runs where worker_id = ? and status in ('assigned','running')) < ?
            returning *)
     select (select row_to_json(claimed) from claimed) as run, exists (select 1 from next) as queued`,
    [runTransition('queued', RunEvent.assign), workerId, workerId, capacity],
  );
  // A copy: nothing for the transaction's flush to write again.
  return { run: row?.run ? { ...tx.map(RunSchema, row.run) } : null, queued: !!row?.queued };
}
