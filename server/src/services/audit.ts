import { redact, type ActorType, type AuditEvent, type AuditEventPage, type AuditHead, type AuditResult, type VerifyResponse } from '@handoff/shared';
import type { AuditAnchor } from './audit-anchor.js';
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

export interface ListAuditQuery {
  cursor?: number | undefined;
  limit: number;
  action?: string | undefined;
  /** Rows up to this seq only (an export stops at the head it ends with). */
  maxSeq?: number | undefined;
}

/** A page of a run's audit rows in chain order. */
export async function listAudit(tx: Em, runId: string, q: ListAuditQuery) {
  const rows = await tx.find(
    ControlEventSchema,
    { runId, seq: q.maxSeq === undefined ? { $gt: q.cursor ?? 0 } : { $gt: q.cursor ?? 0, $lte: q.maxSeq }, ...(q.action ? { action: q.action } : {}) },
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
    private readonly anchor: AuditAnchor,
  ) {}
  /** A page of rows with the run's whole chain head, signed now. */
  async list(actor: UserActor, runId: string, q: ListAuditQuery): Promise<AuditEventPage> {
    await this.gate.check('audit.read', actor, { runId });
    const tx = em(this.orm);
    const head = await this.anchor.head(tx, runId);
    return { ...(await listAudit(tx, runId, q)), head };
  }
  /** The run's signed head; an export streams rows up to it, then ends with it. */
  async head(actor: UserActor, runId: string): Promise<AuditHead> {
    await this.gate.check('audit.read', actor, { runId });
    return this.anchor.head(em(this.orm), runId);
  }
  /** Rows for an export, after `head()` checked the caller (no second policy round trip per page). */
  exportPage(runId: string, q: ListAuditQuery) {
    return listAudit(em(this.orm), runId, q);
  }
  /**
   * Recomputes the chain, and compares its length with the newest signed checkpoint: rows cut
   * off the tail by someone past the triggers (owner role) show up here as long as the
   * checkpoints survive; the offline verifier (docs/audit.md) needs no database at all.
   */
  async verify(actor: UserActor, runId: string): Promise<VerifyResponse> {
    await this.gate.check('audit.read', actor, { runId });
    const tx = em(this.orm);
    const result = await verifyAudit(tx, runId);
    if (!result.ok) return result;
    const brokenAt = await this.anchor.checkAgainstCheckpoint(tx, runId, result.rows);
    if (brokenAt) return { ok: false, rows: result.rows, brokenAt };
    return result;
  }
}
