import type { Em } from '../infra/db/orm.js';

// The approval chain's raw SQL: its conditional updates (`where status = 'pending'`,
// `where outcome is null`) decide races between hub nodes, so each is one statement.

/**
 * Approved requests whose command never recorded an outcome, resolved over 5 s ago (the
 * node that approved them had time to run them), oldest first, at most 20.
 */
export async function approvedWithoutOutcome(tx: Em): Promise<{ id: string }[]> {
  return tx.execute<{ id: string }[]>(
    `select id from approvals where status = 'approved' and (context->'outcome') is null and resolved_at < now() - interval '5 seconds' order by resolved_at limit 20`,
  );
}

/**
 * Stores the request's `context` (with its outcome) unless an outcome is already recorded:
 * false when another node recorded one first.
 */
export async function recordOutcome(tx: Em, approvalId: string, context: object): Promise<boolean> {
  const n = await tx.execute<{ id: string }[]>(`update approvals set context = ? where id = ? and (context->'outcome') is null returning id`, [JSON.stringify(context), approvalId]);
  return n.length > 0;
}

/**
 * Whether the chain (the run's, or the global one for `runId` null) holds a row correlated
 * with `correlationId` whose action is none of `except`.
 */
export async function correlatedAuditExists(tx: Em, runId: string | null, correlationId: string, except: string[]): Promise<boolean> {
  const where = runId ? 'run_id = ? and' : '';
  const params = runId ? [runId, correlationId, ...except] : [correlationId, ...except];
  const found = await tx.execute(`select 1 from audit_events where ${where} correlation_id = ? and action not in (${except.map(() => '?').join(', ')}) limit 1`, params);
  return found.length > 0;
}

/** Pending requests past their expiry (by the database clock). */
export async function pendingPastExpiry(tx: Em): Promise<{ id: string }[]> {
  return tx.execute<{ id: string }[]>(`select id from approvals where status = 'pending' and expires_at <= now()`);
}

/** Expires the request if it is still pending and past its expiry: false when it was not. */
export async function expireIfDue(tx: Em, approvalId: string): Promise<boolean> {
  const n = await tx.execute<{ id: string }[]>(
    `update approvals set status = 'expired', resolved_at = now(), reason = 'no decision within APPROVAL_TIMEOUT' where id = ? and status = 'pending' and expires_at <= now() returning id`,
    [approvalId],
  );
  return n.length > 0;
}

/**
 * Resolves the request (`approved` or `denied`) with its new `context`, if it is still pending
 * and not expired (by the database clock): false when it is not.
 */
export async function resolvePending(
  tx: Em,
  approvalId: string,
  to: 'approved' | 'denied',
  resolvedBy: string,
  reason: string | null,
  context: object,
): Promise<boolean> {
  const n = await tx.execute<{ id: string }[]>(
    `update approvals set status = ?, resolved_at = now(), resolved_by = ?, reason = ?, context = ? where id = ? and status = 'pending' and expires_at > now() returning id`,
    [to, resolvedBy, reason, JSON.stringify(context), approvalId],
  );
  return n.length > 0;
}
