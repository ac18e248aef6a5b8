import type { Em } from '../infra/db/orm.js';

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
