import { observerAuditView, type ActorType, type Role, type PaneInfo, type AuditEvent, type AuditEventPage, type AuditHead, type VerifyResponse } from '@handoff/shared';
import type { AuditAnchor } from './audit-anchor.js';
import { actorNames, frameSeqsAt, recordedPane } from './audit-timeline.js';
import { AuditEventSchema, type AuditEventRow } from '../infra/db/entities.js';
import { em, type Em, type Orm } from '../infra/db/orm.js';
import { chainHash } from '../domain/hash-chain.js';

// The read side of the audit log (the API's pages, verification, export). The write side,
// audit.ts, depends on nothing but the database: every feature appends through it.

export function auditView(row: AuditEventRow): AuditEvent {
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
    AuditEventSchema,
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
    const rows = await tx.find(AuditEventSchema, { runId, seq: { $gt: cursor } }, { orderBy: { seq: 'asc' }, limit: 1000 });
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

/**
 * Observers read the log through `observerAuditView` whatever the policy lets them: the
 * policy decides *whether* a role reads the log, the role decides *how much* of it.
 */
/** A signed-in user reading the log. */
export interface AuditReader {
  type: ActorType;
  id: string;
  name: string;
  role: Role;
}

/** Where `audit.read` is decided: the policy gate, passed in by the composition root (the policy writes to this log, so the log does not import it). */
export interface AuditReadGate {
  check(action: 'audit.read', actor: AuditReader, ctx: { runId: string }): Promise<void>;
}

const isObserver = (actor: AuditReader) => actor.role === 'observer';

/** Read side of the audit log, for the API. */
export class AuditLog {
  constructor(
    private readonly orm: Orm,
    private readonly gate: AuditReadGate,
    private readonly anchor: AuditAnchor,
  ) {}
  /** A page of rows with the run's whole chain head, signed now. */
  async list(actor: AuditReader, runId: string, q: ListAuditQuery): Promise<AuditEventPage> {
    await this.gate.check('audit.read', actor, { runId });
    const tx = em(this.orm);
    const head = await this.anchor.head(tx, runId);
    const page = await listAudit(tx, runId, q);
    const [actors, frames] = await Promise.all([actorNames(tx, page.events), frameSeqsAt(tx, runId, page.events)]);
    const observerView = isObserver(actor);
    return { events: observerView ? page.events.map(observerAuditView) : page.events, nextCursor: page.nextCursor, head, actors, frames, observerView };
  }
  /** The run's signed head; an export streams rows up to it, then ends with it. */
  async head(actor: AuditReader, runId: string): Promise<AuditHead> {
    await this.gate.check('audit.read', actor, { runId });
    return this.anchor.head(em(this.orm), runId);
  }
  /** Rows for an export, after `head()` checked the caller (no second policy round trip per page); an observer's as they may read them. */
  async exportPage(actor: AuditReader, runId: string, q: ListAuditQuery) {
    const page = await listAudit(em(this.orm), runId, q);
    return isObserver(actor) ? { ...page, events: page.events.map(observerAuditView) } : page;
  }
  /** The run's pane (size, TERM, shell) as recorded with its start; null when its worker did not say. */
  pane(runId: string): Promise<PaneInfo | null> {
    return recordedPane(em(this.orm), runId);
  }
  /**
   * Recomputes the chain, and compares its length with the newest signed checkpoint: rows cut
   * off the tail by someone past the triggers (owner role) show up here as long as the
   * checkpoints survive; the offline verifier (docs/audit.md) needs no database at all.
   */
  async verify(actor: AuditReader, runId: string): Promise<VerifyResponse> {
    await this.gate.check('audit.read', actor, { runId });
    const tx = em(this.orm);
    const result = await verifyAudit(tx, runId);
    if (!result.ok) return result;
    const brokenAt = await this.anchor.checkAgainstCheckpoint(tx, runId, result.rows);
    if (brokenAt) return { ok: false, rows: result.rows, brokenAt };
    return result;
  }
}
