import type { Em } from '../infra/db/orm.js';
import { RunEvent, runTransition } from '../domain/run-machine.js';

/** What a claim found. */
export interface ClaimRow {
  /** The run claimed for the worker, if any. */
  id: string | null;
  /** Whether a queued run was there to take (false: the queue is empty, or every queued run is being claimed elsewhere). */
  queued: boolean;
}

/**
 * One statement: the oldest queued run nobody else is claiming, given to the worker (assigned)
 * only if the database agrees it has room (fewer than `capacity` assigned or running runs).
 * The CTE is evaluated once (referenced twice).
 */
export async function claimOldestQueued(tx: Em, workerId: string, capacity: number): Promise<ClaimRow | undefined> {
  const [row] = await tx.execute<ClaimRow[]>(
    `with next as (select id from runs where status = 'queued' order by created_at, id limit 1 for update skip locked),
          claimed as (
            update runs set status = ?, worker_id = ?, assigned_at = now()
             where id = (select id from next) and status = 'queued'
               and (select count(*) from runs where worker_id = ? and status in ('assigned','running')) < ?
            returning id)
     select (select id from claimed) as id, exists (select 1 from next) as queued`,
    [runTransition('queued', RunEvent.assign), workerId, workerId, capacity],
  );
  return row;
}
