import type { Em } from '../infra/db/orm.js';

// Write grants' raw SQL: the per-run lock of grants, and the keystroke check, which asks the
// database clock so an expired grant stops input before the sweeper ends it.

/**
 * Takes the run's grant lock for the rest of the transaction: grants of one run serialize.
 * The lock is the run's row: a grant's insert or update touches that row anyway (its
 * revision trigger), and a takeover holds it before it grants — one lock in one order, so
 * a grant-write racing a takeover waits instead of deadlocking (test/integration/grant-races).
 */
export async function lockRunGrants(tx: Em, runId: string): Promise<void> {
  await tx.execute('select 1 from runs where id = ? for no key update', [runId]);
}

/**
 * The operator's live grant on the run (active and not expired by the database clock), with
 * the run's worker and status; undefined when there is none.
 */
export async function liveGrantForInput(
  tx: Em,
  runId: string,
  granteeId: string,
): Promise<{ id: string; worker_id: string | null; status: string } | undefined> {
  const rows = await tx.execute<{ id: string; worker_id: string | null; status: string }[]>(
    `select g.id, r.worker_id, r.status from write_grants g join runs r on r.id = g.run_id
      where g.run_id = ? and g.grantee_id = ? and g.status = 'active' and g.expires_at > now() limit 1`,
    [runId, granteeId],
  );
  return rows[0];
}
