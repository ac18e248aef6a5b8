import type { Em } from '../infra/db/orm.js';

// Worker presence's raw SQL: hellos, heartbeats and departures. Every time written is the
// injected clock's (a parameter), and `greatest(…)` keeps an older beat (another node's, or a
// retried batch) from moving a worker's time back; the row lock (`for update`) reads the
// previous status and writes the new one in one step.

/** What a hello or a heard beat found: the worker's status before it. */
interface WasRow {
  was: string;
}

/**
 * The flush's first statement: the heard workers' heartbeat time, each as when the node
 * received it (param: `[{id, at}]` as JSON). Only a lost worker changes status here: an
 * offline one (its socket left after the beat) stays offline. Rows are locked in id order.
 */
const HEARD_WORKERS_UPDATE = `update workers w
              set last_heartbeat_at = greatest(w.last_heartbeat_at, v.at),
                  status = case when w.status = 'lost' then 'online' else w.status end
             from (select o.id, o.status, h.at
                     from jsonb_to_recordset(?::jsonb) as h(id uuid, at timestamptz)
                     join workers o on o.id = h.id
                    order by o.id
                      for update of o) v
            where w.id = v.id
            returning w.id, v.status as was`;

/**
 * The flush's second statement: the heartbeat time of the heard workers' active shares
 * (param: `[{id, at}]` as JSON). Exported for the EXPLAIN test (live_sessions_worker_active_idx).
 */
export const HEARD_SHARES_UPDATE = `update live_sessions s set last_heartbeat_at = greatest(s.last_heartbeat_at, h.at)
   from jsonb_to_recordset(?::jsonb) as h(id uuid, at timestamptz)
  where s.worker_id = h.id and s.status in ('STARTING','READY')`;

/**
 * A hello: the worker is `online`, heard at `heardAt`, with its capacity, version and the
 * connection's `connectedAt` (which identifies it for `markOffline`). Returns its previous
 * status (undefined when there is no such worker).
 */
export async function markHello(tx: Em, workerId: string, heardAt: Date, capacity: number, version: string, connectedAt: Date): Promise<string | undefined> {
  const rows = await tx.execute<WasRow[]>(
    `update workers w set status = 'online', last_heartbeat_at = greatest(w.last_heartbeat_at, ?::timestamptz), capacity = ?, version = ?, connected_at = ?
       from (select id, status from workers where id = ? for update) old
      where w.id = old.id
      returning old.status as was`,
    [heardAt, capacity, version, connectedAt, workerId],
  );
  return rows[0]?.was;
}

/**
 * A beat heard at `heardAt`, written at once: the worker is `online`. Returns its previous
 * status (undefined when there is no such worker).
 */
export async function markHeard(tx: Em, workerId: string, heardAt: Date): Promise<string | undefined> {
  const rows = await tx.execute<WasRow[]>(
    `update workers w set status = 'online', last_heartbeat_at = greatest(w.last_heartbeat_at, ?::timestamptz)
       from (select id, status from workers where id = ? for update) old
      where w.id = old.id
      returning old.status as was`,
    [heardAt, workerId],
  );
  return rows[0]?.was;
}

/**
 * Writes a batch of heard beats (`beats`: `[{id, at}]` as JSON), the workers' then their
 * active shares' (`HEARD_WORKERS_UPDATE`, `HEARD_SHARES_UPDATE`), in the caller's
 * transaction. Returns each heard worker's id with its previous status.
 */
export async function writeHeard(tx: Em, beats: string): Promise<{ id: string; was: string }[]> {
  const rows = await tx.execute<{ id: string; was: string }[]>(HEARD_WORKERS_UPDATE, [beats]);
  await tx.execute(HEARD_SHARES_UPDATE, [beats]);
  return rows;
}

/**
 * The socket of the hello made at `connectedAt` left: `offline`, unless a newer hello (on any
 * node) replaced it meanwhile, or the sweeper already found it lost.
 */
export async function markOffline(tx: Em, workerId: string, connectedAt: Date): Promise<void> {
  await tx.execute(`update workers set status = 'offline' where id = ? and connected_at = ? and status = 'online'`, [workerId, connectedAt]);
}
