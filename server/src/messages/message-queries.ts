import type { Em } from '../infra/db/orm.js';

// Operator messages' raw SQL: the redelivery lookup, which joins the runs a worker holds.

/**
 * The ids of the messages not yet acked (`delivered_at` null) on the runs assigned to or
 * running on the worker, oldest first (by `created_at`, then id): the order they are delivered in.
 */
export async function undeliveredForWorker(tx: Em, workerId: string): Promise<{ id: string }[]> {
  return tx.execute<{ id: string }[]>(
    `select m.id from operator_messages m join runs r on r.id = m.run_id
      where r.worker_id = ? and r.status in ('assigned','running') and m.delivered_at is null order by m.created_at, m.id`,
    [workerId],
  );
}
