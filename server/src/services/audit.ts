import type { ActorType, AuditResult } from '@handoff/shared';
import { ControlEventSchema, type ControlEvent } from '../db/entities.js';
import type { Em } from '../db/orm.js';
import { chainHash } from '../domain/hash-chain.js';
import { uuidv7 } from './ids.js';

/** Who did something. */
export interface Actor {
  type: ActorType;
  id: string;
}
export const SYSTEM: Actor = { type: 'system', id: 'hub' };

export interface AuditEntry {
  runId: string | null;
  sessionId?: string | null;
  correlationId?: string;
  actor: Actor;
  action: string;
  result?: AuditResult;
  metadata?: Record<string, unknown>;
}

/**
 * Appends an audit row inside the caller's transaction `tx`, chained to the run's
 * previous row. The per-run advisory lock serializes writers so the chain never forks.
 */
export async function appendAudit(tx: Em, entry: AuditEntry): Promise<ControlEvent> {
  const chainKey = entry.runId ?? 'global';
  await tx.execute('select pg_advisory_xact_lock(hashtextextended(?, 0))', [`audit:${chainKey}`]);
  const [prev] = await tx.execute<{ hash: string; seq: number }[]>(
    entry.runId
      ? 'select hash, seq from control_events where run_id = ? order by seq desc limit 1'
      : 'select hash, seq from control_events where run_id is null order by seq desc limit 1',
    entry.runId ? [entry.runId] : [],
  );
  const now = new Date();
  const fields = {
    id: uuidv7(now.getTime()),
    runId: entry.runId,
    seq: (prev?.seq ?? 0) + 1,
    sessionId: entry.sessionId ?? null,
    correlationId: entry.correlationId ?? uuidv7(now.getTime()),
    actorType: entry.actor.type,
    actorId: entry.actor.id,
    action: entry.action,
    result: entry.result ?? 'ok',
    at: now.toISOString(),
    metadata: entry.metadata ?? {},
  };
  const prevHash = prev?.hash ?? null;
  const row = tx.create(ControlEventSchema, { ...fields, at: now, prevHash, hash: chainHash(prevHash, fields) });
  await tx.persist(row).flush();
  return row;
}
