import { redact, type ActorType, type AuditEvent, type AuditResult, type VerifyResponse } from '@handoff/shared';
import { ControlEventSchema, type ControlEvent } from '../db/entities.js';
import { em, type Em, type Orm } from '../db/orm.js';
import { chainHash } from '../domain/hash-chain.js';
import type { PolicyGate, UserActor } from './policy-gate.js';
import { uuidv7 } from './ids.js';
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

/**
 * Appends an audit row inside the caller's transaction `tx`, chained to the run's
 * previous row. The per-run advisory lock serializes writers so the chain never forks.
 */
export async function appendAudit(tx: Em, entry: AuditEntry): Promise<ControlEvent> {
  const started = performance.now();
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
    id: uuidv7(),
    runId: entry.runId,
    seq: (prev?.seq ?? 0) + 1,
    sessionId: entry.sessionId ?? null,
    correlationId: entry.correlationId ?? uuidv7(),
    actorType: entry.actor.type,
    actorId: entry.actor.id,
    action: entry.action,
    result: entry.result ?? 'ok',
    at: now.toISOString(),
    // Redacted before hashing and persisting: a secret must never enter the append-only log.
    metadata: redact(entry.metadata ?? {}),
  };
  const prevHash = prev?.hash ?? null;
  const row = tx.create(ControlEventSchema, { ...fields, at: now, prevHash, hash: chainHash(prevHash, fields) });
  await tx.persist(row).flush();
  metrics.auditAppend.observe(secondsSince(started));
  requestContext.getStore()?.correlationIds.add(row.correlationId);
  return row;
}

export function auditView(row: ControlEvent): AuditEvent {
  return {
    id: row.id, runId: row.runId ?? null, seq: row.seq, sessionId: row.sessionId ?? null, correlationId: row.correlationId,
    actorType: row.actorType, actorId: row.actorId, action: row.action, result: row.result, at: row.at.toISOString(),
    metadata: row.metadata, prevHash: row.prevHash ?? null, hash: row.hash,
  };
}

/** A page of a run's audit rows in chain order. */
export async function listAudit(tx: Em, runId: string, q: { cursor?: number | undefined; limit: number; action?: string | undefined }) {
  const rows = await tx.find(
    ControlEventSchema,
    { runId, seq: { $gt: q.cursor ?? 0 }, ...(q.action ? { action: q.action } : {}) },
    { orderBy: { seq: 'asc' }, limit: q.limit + 1 },
  );
  const page = rows.slice(0, q.limit);
  return { events: page.map(auditView), nextCursor: rows.length > q.limit ? page[page.length - 1]!.seq : null };
}

/** Recomputes a run's hash chain and names the first row that does not match. */
export async function verifyAudit(tx: Em, runId: string): Promise<VerifyResponse> {
  let prev: string | null = null;
  let expectedSeq = 1;
  let count = 0;
  for (let cursor = 0; ; ) {
    const rows = await tx.find(ControlEventSchema, { runId, seq: { $gt: cursor } }, { orderBy: { seq: 'asc' }, limit: 1000 });
    for (const r of rows) {
      count += 1;
      const { hash, prevHash, at, ...rest } = r;
      const fields = { ...rest, runId: rest.runId ?? null, sessionId: rest.sessionId ?? null, at: at.toISOString() };
      const reason =
        r.seq !== expectedSeq ? `row missing before position ${r.seq}` : (prevHash ?? null) !== prev ? 'prevHash does not link to the previous row' : chainHash(prev, fields) !== hash ? 'hash does not match the row' : null;
      if (reason) return { ok: false, rows: count, brokenAt: { seq: r.seq, id: r.id, reason } };
      prev = hash;
      expectedSeq += 1;
    }
    if (rows.length < 1000) break;
    cursor = rows[rows.length - 1]!.seq;
  }
  return { ok: true, rows: count };
}

/** Read side of the audit log, for the API. */
export class AuditLog {
  constructor(
    private readonly orm: Orm,
    private readonly gate: PolicyGate,
  ) {}
  async list(actor: UserActor, runId: string, q: { cursor?: number | undefined; limit: number; action?: string | undefined }) {
    await this.gate.check('audit.read', actor, { runId });
    return listAudit(em(this.orm), runId, q);
  }
  async verify(actor: UserActor, runId: string): Promise<VerifyResponse> {
    await this.gate.check('audit.read', actor, { runId });
    return verifyAudit(em(this.orm), runId);
  }
}
