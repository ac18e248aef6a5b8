import type { AuditHead } from '@handoff/shared';
import type { Em } from '../infra/db/orm.js';
import { uuidv7 } from '../infra/ids.js';

// The audit anchor's SQL: chain heads, the append-only `audit_checkpoints` table, and the
// sweep for chains that grew since their newest checkpoint.

/** Runs checkpointed per sweep at most: a backlog drains over a few sweeps, never in one long one. */
export const CHECKPOINT_BATCH = 500;

/** Runs whose chain has rows newer than the bound and past their newest checkpoint, with their head. */
export const GROWN_CHAINS_SQL = `with grown as (
    select e.run_id, max(e.seq) as seq, max(e.at) as rows_until from audit_events e
     where e.at > ? and e.run_id is not null
     group by e.run_id
    having max(e.seq) > coalesce((select max(c.seq) from audit_checkpoints c where c.run_id = e.run_id), 0)
     order by rows_until
     limit ${CHECKPOINT_BATCH})
  select g.run_id, g.seq, e.hash, g.rows_until from grown g join audit_events e on e.run_id = g.run_id and e.seq = g.seq
   order by g.rows_until`;

/** The run's newest audit row (its chain head), or undefined for an empty chain. */
export async function chainTop(tx: Em, runId: string): Promise<{ seq: number; hash: string; at: Date } | undefined> {
  const [top] = await tx.execute<{ seq: number; hash: string; at: Date }[]>('select seq, hash, at from audit_events where run_id = ? order by seq desc limit 1', [runId]);
  return top;
}

/** The run's newest checkpoint signed by key `keyId`, or undefined. */
export async function newestCheckpoint(
  tx: Em,
  runId: string,
  keyId: string,
): Promise<{ seq: number; hash: string; signed_at: Date; key_id: string; signature: string } | undefined> {
  const [cp] = await tx.execute<{ seq: number; hash: string; signed_at: Date; key_id: string; signature: string }[]>(
    'select seq, hash, signed_at, key_id, signature from audit_checkpoints where run_id = ? and key_id = ? order by seq desc limit 1',
    [runId, keyId],
  );
  return cp;
}

/** The run's audit row at `seq`, or undefined. */
export async function auditRowAt(tx: Em, runId: string, seq: number): Promise<{ id: string; hash: string } | undefined> {
  const [row] = await tx.execute<{ id: string; hash: string }[]>('select id, hash from audit_events where run_id = ? and seq = ?', [runId, seq]);
  return row;
}

/**
 * The sweep watermark: the newest `rows_until` of the sweep checkpoints, or null before the
 * first sweep. Read on its own, so `grownChains` gets the window's start as a parameter, not
 * a subquery: the planner sees the real bound and uses audit_events_at_idx
 * (test/integration/audit-index.test.ts proves it).
 */
export async function sweepWatermark(tx: Em): Promise<Date | null> {
  const [last] = await tx.execute<{ t: Date | null }[]>(`select max(rows_until) as t from audit_checkpoints where source = 'sweep'`);
  return last?.t ?? null;
}

/** GROWN_CHAINS_SQL for rows newer than `since`: at most CHECKPOINT_BATCH runs, oldest growth first. */
export async function grownChains(tx: Em, since: Date): Promise<{ run_id: string; seq: number; hash: string; rows_until: Date }[]> {
  return tx.execute<{ run_id: string; seq: number; hash: string; rows_until: Date }[]>(GROWN_CHAINS_SQL, [since]);
}

/** Stores a signed head; idempotent per chain position (`on conflict (run_id, seq) do nothing`). */
export async function insertCheckpoint(tx: Em, head: AuditHead, rowsUntil: Date, source: 'exit' | 'sweep'): Promise<void> {
  await tx.execute(
    `insert into audit_checkpoints (id, run_id, seq, hash, signed_at, key_id, signature, source, rows_until) values (?, ?, ?, ?, ?, ?, ?, ?, ?)
     on conflict (run_id, seq) do nothing`,
    [uuidv7(), head.runId, head.seq, head.hash, head.signedAt, head.keyId, head.signature, source, rowsUntil],
  );
}
