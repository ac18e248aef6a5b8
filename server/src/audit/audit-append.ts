import { redact, type ActorType, type AuditResult } from '@handoff/shared';
import type { AuditEventRow } from '../infra/db/entities.js';
import type { Em } from '../infra/db/orm.js';
import { chainHashParts } from '../domain/hash-chain.js';
import { uuidv7 } from '../infra/ids.js';
import { metrics, secondsSince } from '../metrics.js';
import { requestContext } from '../request-context.js';

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

/** The chain position `audit_append` gave a row (the columns a statement selects from the call). */
export interface Chained {
  chain_seq: number;
  chain_prev_hash: string | null;
  chain_hash: string;
}

/**
 * One `audit_append(…)` call (migration 0013): the chain's advisory lock (writers of one chain
 * serialize, the chain never forks), the head read and the insert, in one round trip. The hash
 * covers the same canonical JSON as `chainHash`, cut around the seq, which only the database
 * knows once it holds the lock. `runIdSql` lets a caller tie the call to a row its own
 * statement changed (`lateral audit_append(changed.id, …)`): no change, no audit row.
 */
export function auditAppendCall(entry: AuditEntry, at: Date, runIdSql = '?') {
  const fields = {
    id: uuidv7(),
    runId: entry.runId,
    sessionId: entry.sessionId ?? null,
    correlationId: entry.correlationId ?? uuidv7(),
    actorType: entry.actor.type,
    actorId: entry.actor.id,
    action: entry.action,
    result: entry.result ?? 'ok',
    at: at.toISOString(),
    // Redacted before hashing and persisting: a secret must never enter the append-only log.
    metadata: redact(entry.metadata ?? {}),
  };
  const { prefix, suffix } = chainHashParts(fields);
  const started = performance.now();
  return {
    sql: `audit_append(${runIdSql}, ?, ?, ?, ?, ?, ?, ?, ?, ?::jsonb, ?, ?)`,
    params: [
      ...(runIdSql === '?' ? [fields.runId] : []),
      fields.id, fields.sessionId, fields.correlationId, fields.actorType, fields.actorId, fields.action, fields.result, fields.at, JSON.stringify(fields.metadata), prefix, suffix,
    ],
    /** The appended row, from the call's result. */
    row(chained: Chained): AuditEventRow {
      metrics.auditAppend.observe(secondsSince(started));
      requestContext.getStore()?.correlationIds.add(fields.correlationId);
      return { ...fields, seq: chained.chain_seq, at, prevHash: chained.chain_prev_hash, hash: chained.chain_hash } as AuditEventRow;
    },
    /** The appended row from a result row of the caller's statement that also carries the call's columns: the rest of that row. */
    take<R extends object>(raw: R & Chained): Omit<R, keyof Chained> {
      const { chain_seq, chain_prev_hash, chain_hash, ...rest } = raw;
      this.row({ chain_seq, chain_prev_hash, chain_hash });
      return rest;
    },
  };
}

/** One prepared `audit_append(…)` call. */
export type AuditAppendCall = ReturnType<typeof auditAppendCall>;

/** Makes a prepared call on its own statement inside the caller's transaction `tx`: one round trip. */
export async function runAuditAppendCall(tx: Em, call: AuditAppendCall): Promise<AuditEventRow> {
  const [chained] = await tx.execute<Chained[]>(`select chain_seq, chain_prev_hash, chain_hash from ${call.sql}`, call.params);
  return call.row(chained!);
}

/**
 * Appends an audit row, chained to the run's previous row: one round trip. Inside the
 * caller's transaction `tx` it commits (or not) with the change it records; given a plain
 * `em(orm)` it is one autocommit statement, atomic on its own (`audit_append` locks the chain
 * for its statement) — a row that records nothing else (a denial, a reveal) needs no
 * BEGIN/COMMIT around it. `at`: the caller's clock (the process decides when it acted).
 */
export async function appendAudit(tx: Em, entry: AuditEntry, at: Date): Promise<AuditEventRow> {
  return runAuditAppendCall(tx, auditAppendCall(entry, at));
}
