import {
  AppError,
  ErrorCode,
  ACTIVE_RUN_STATUSES,
  type Clock,
  type GrantStatus,
  type GrantWriteBody,
  type GrantWriteResponse,
  type LiveSession,
  type Provider,
  type RunStatus,
  type TermInput,
  type WriteGrant,
} from '@handoff/shared';
import type { Logger } from 'pino';
import { LiveSessionSchema, WriteGrantSchema, type LiveSessionRow, type WriteGrantRow } from '../infra/db/entities.js';
import { em, type Em, type Orm } from '../infra/db/orm.js';
import { syncWithDatabase } from '../infra/db/revisions.js';
import { boundedTtlMs } from '../domain/ttl.js';
import { GrantEvent, grantStatesAllowing, grantTransition } from '../domain/write-grant-machine.js';
import { appendAudit, SYSTEM, type Actor } from '../audit/audit-append.js';
import { uuidv7 } from '../infra/ids.js';
import type { LiveSessionService } from '../sessions/live-session-service.js';
import type { Notifier } from '../hooks/notifier.js';
import { isUser, rolesOf, type CommandOptions, type PolicyGate, type UserActor } from '../policy/policy-gate.js';
import { requireRun } from '../runs/run-queries.js';
import type { RunService } from '../runs/run-service.js';
import { grantView, sessionView } from '../views.js';
import { liveGrantForInput, lockRunGrants } from './grant-queries.js';

/** Opens RW attach data sealed at rest (bound to its session id). */
export interface Opener {
  open(sealed: string, aad: string): string;
}

export interface WriteGrantOptions {
  /** LIVE_RW_GRANT_TTL: a grant's length when none is asked for, ms. */
  ttlMs: number;
  /** LIVE_RW_GRANT_MAX_TTL: the longest grant, ms. */
  maxTtlMs: number;
}

/** Where a grant's session comes from: a provider asked for, else the run's web share first (takeover) or the primary one. */
export interface GrantTarget {
  provider?: Provider | undefined;
  preferWeb?: boolean;
  correlationId: string;
}

/**
 * Write grants (DESIGN.md §2 "Attach data and write grants"): per operator and run,
 * time-bound, revocable, audited. RW attach data is decrypted only into the grantee's
 * grant-write response. Only a live grant's holder may type into the run's terminal; when
 * a grant that revealed an external share's RW data ends, that share is restarted
 * (rotated) so a leaked link dies with the grant.
 */
export class WriteGrantService {
  constructor(
    private readonly orm: Orm,
    private readonly notifier: Notifier,
    private readonly gate: PolicyGate,
    private readonly clock: Clock,
    private readonly runs: RunService,
    private readonly sessions: LiveSessionService,
    private readonly opener: Opener,
    private readonly log: Logger,
    private readonly options: WriteGrantOptions,
  ) {}

  /** `grant-write`: a grant for the caller (a live one is renewed), with the RW attach data of its session. */
  async grant(actor: UserActor, runId: string, body: GrantWriteBody, opts: CommandOptions = {}): Promise<GrantWriteResponse> {
    const ttlMs = this.requestedTtl(body.ttlMinutes);
    if (!opts.approved) {
      const run = await requireRun(em(this.orm), runId);
      await this.gate.check('rw.grant', actor, { runId, runLabels: run.labels, ttlMinutes: Math.ceil(ttlMs / 60_000), ...(body.provider ? { provider: body.provider } : {}) }, { ...body });
    }
    const { grant, session } = await em(this.orm).transactional((tx) => this.grantIn(tx, actor, runId, ttlMs, { provider: body.provider, correlationId: opts.correlationId ?? uuidv7() }));
    await this.announce(grant);
    return this.withAttachData(grant, session);
  }

  /**
   * The same as `grant`, after an approval: the outcome is stored and shown to approvers,
   * so it carries no attach data; the grantee reads it with `reveal`.
   */
  async grantApproved(actor: UserActor, runId: string, body: GrantWriteBody, approvalId: string): Promise<Omit<GrantWriteResponse, 'attachRw' | 'webRw'>> {
    const { session, grant, grantedUntil } = await this.grant(actor, runId, body, { approved: true, correlationId: approvalId });
    return { session, grant, grantedUntil };
  }

  /** The RW attach data of the caller's live grant (e.g. after an approved grant). */
  async reveal(actor: UserActor, runId: string): Promise<GrantWriteResponse> {
    const tx = em(this.orm);
    const grant = await tx.findOne(WriteGrantSchema, { runId, granteeId: actor.id, status: 'active', expiresAt: { $gt: this.clock.date() } });
    if (!grant) throw new AppError({ code: ErrorCode.FORBIDDEN, message: `you hold no live write grant on run ${runId}` });
    const session = await tx.findOneOrFail(LiveSessionSchema, { id: grant.sessionId });
    await appendAudit(tx, { runId, sessionId: session.id, correlationId: grant.correlationId, actor, action: 'rw.reveal', metadata: { grantId: grant.id, provider: session.provider } }, this.clock.date());
    return this.withAttachData(grant, session);
  }

  /**
   * Inside the caller's transaction: a grant for `actor` on the run's READY session (else
   * STATE_CONFLICT), audited as `rw.grant`. A live grant of the same operator is renewed.
   */
  async grantIn(tx: Em, actor: UserActor, runId: string, ttlMs: number, target: GrantTarget): Promise<{ grant: WriteGrantRow; session: LiveSessionRow }> {
    // Serializes grants per run: one live grant per operator holds under concurrency.
    await lockRunGrants(tx, runId);
    const run = await requireRun(tx, runId);
    if (!ACTIVE_RUN_STATUSES.includes(run.status as RunStatus)) {
      throw new AppError({ code: ErrorCode.STATE_CONFLICT, message: `run ${runId} is ${run.status}: nobody can write to its terminal` });
    }
    const session = await this.targetSession(tx, runId, target);
    const now = this.clock.date();
    const expiresAt = new Date(now.getTime() + ttlMs);
    const revealsRw = session.attachRwEnc !== null && session.attachRwEnc !== undefined;
    const live = await tx.findOne(WriteGrantSchema, { runId, granteeId: actor.id, status: 'active' });
    let grant: WriteGrantRow;
    if (live) {
      // A renewal stays part of the grant's story (e.g. its takeover): same correlation id.
      const changes = { expiresAt, sessionId: session.id, revealsRw: live.revealsRw || revealsRw };
      await tx.nativeUpdate(WriteGrantSchema, { id: live.id, status: 'active' }, changes);
      await syncWithDatabase(tx, live, changes);
      grant = live;
    } else {
      grant = tx.create(WriteGrantSchema, {
        id: uuidv7(), runId, sessionId: session.id, granteeId: actor.id, granteeName: actor.name, status: 'active',
        createdAt: now, expiresAt, endedAt: null, endedBy: null, endReason: null, correlationId: target.correlationId, revealsRw,
      });
      await tx.flush();
    }
    await appendAudit(tx, {
      runId, sessionId: session.id, correlationId: grant.correlationId, actor, action: 'rw.grant',
      metadata: { grantId: grant.id, grantee: actor.name, provider: session.provider, ttlMs, expiresAt: expiresAt.toISOString(), renewed: !!live, revealsRw },
    }, this.clock.date());
    return { grant, session };
  }

  /** `revoke-write`: one grant, or every live grant of the run. */
  async revoke(actor: Actor, runId: string, body: { grantId?: string | undefined }, opts: CommandOptions = {}): Promise<{ session: LiveSession | null; grants: WriteGrant[] }> {
    const tx = em(this.orm);
    const run = await requireRun(tx, runId);
    const live = await tx.find(WriteGrantSchema, { runId, status: 'active', ...(body.grantId ? { id: body.grantId } : {}) });
    if (isUser(actor) && !opts.approved && live.length) {
      // Whose grants would end decides (e.g. an operator may not cut an admin's takeover).
      const targetRoles = await rolesOf(tx, live.map((g) => g.granteeId));
      await this.gate.check('rw.revoke', actor, { runId, runLabels: run.labels, targetRoles }, { ...body });
    }
    if (!live.length) {
      if (body.grantId && (await tx.findOne(WriteGrantSchema, { id: body.grantId, runId }))) {
        throw new AppError({ code: ErrorCode.STATE_CONFLICT, message: `write grant ${body.grantId} has already ended` });
      }
      throw new AppError({ code: body.grantId ? ErrorCode.NOT_FOUND : ErrorCode.STATE_CONFLICT, message: body.grantId ? `write grant ${body.grantId} not found on run ${runId}` : `run ${runId} has no live write grant` });
    }
    const ended = await this.end(live, GrantEvent.revoke, 'revoked', actor);
    if (!ended.length) throw new AppError({ code: ErrorCode.STATE_CONFLICT, message: 'the write grant ended meanwhile' });
    const session = await tx.findOne(LiveSessionSchema, { id: ended[ended.length - 1]!.sessionId }, { refresh: true });
    return { session: session ? sessionView(session) : null, grants: ended.map(grantView) };
  }

  /**
   * Ends `grants` (each a conditional update with its audit row), then tells dashboards and
   * rotates external shares whose RW data went out with them. Returns those that ended here.
   */
  async end(grants: WriteGrantRow[], event: GrantEvent, reason: string, actor: Actor): Promise<WriteGrantRow[]> {
    const ended: WriteGrantRow[] = [];
    for (const g of grants) {
      const row = await em(this.orm).transactional((tx) => this.endIn(tx, g, event, reason, actor));
      if (row) ended.push(row);
    }
    await this.afterEnd(ended);
    return ended;
  }

  /** Inside `tx`: ends the grant if it is still live (conditional update + audit). Null if it was not. */
  async endIn(tx: Em, g: WriteGrantRow, event: GrantEvent, reason: string, actor: Actor): Promise<WriteGrantRow | null> {
    const from = g.status as GrantStatus;
    if (!grantStatesAllowing(event).includes(from)) return null;
    // The run's lock before the grant's row, as every grant change and a takeover take them.
    await lockRunGrants(tx, g.runId);
    const changes = { status: grantTransition(from, event), endedAt: this.clock.date(), endedBy: actor.id, endReason: reason };
    const n = await tx.nativeUpdate(WriteGrantSchema, { id: g.id, status: from }, changes);
    if (n !== 1) return null;
    await syncWithDatabase(tx, g, changes);
    await appendAudit(tx, {
      runId: g.runId, sessionId: g.sessionId, correlationId: g.correlationId, actor, action: event === GrantEvent.expire ? 'rw.expire' : 'rw.revoke',
      metadata: { grantId: g.id, grantee: g.granteeName, reason },
    }, this.clock.date());
    return g;
  }

  /** After grants ended (committed): dashboards hear of it, leaked RW links are rotated. */
  async afterEnd(ended: WriteGrantRow[]): Promise<void> {
    for (const g of ended) this.notifier.grantUpdated(grantView(g));
    const rotate = new Set(ended.filter((g) => g.revealsRw).map((g) => g.sessionId));
    for (const sessionId of rotate) {
      await this.sessions.rotate(sessionId).catch((err) => this.log.error({ err, sessionId }, 'could not rotate a share after its write grant ended'));
    }
    for (const runId of new Set(ended.map((g) => g.runId))) await this.publish(runId);
  }

  /** Sweeper chore: grants past their TTL expire (one leader; conditional updates). */
  async expireDue(): Promise<void> {
    const due = await em(this.orm).find(WriteGrantSchema, { status: 'active', expiresAt: { $lte: this.clock.date() } });
    if (due.length) await this.end(due, GrantEvent.expire, 'ttl', SYSTEM);
  }

  /** A session left the active states: grants issued on it end with it. */
  async onSessionEnded(sessionId: string, reason: string): Promise<void> {
    const live = await em(this.orm).find(WriteGrantSchema, { sessionId, status: 'active' });
    if (live.length) await this.end(live, GrantEvent.revoke, `session-${reason}`, SYSTEM);
  }

  /**
   * Dashboard keystrokes: only the holder of a live grant (by the database clock, so an
   * expired grant stops input before the sweeper runs) may type; anyone else is refused
   * (FORBIDDEN) and audited. Resolves once the worker's tmux took the keys.
   */
  async input(user: UserActor, input: TermInput): Promise<void> {
    const live = await liveGrantForInput(em(this.orm), input.runId, user.id);
    if (!live) {
      const run = await requireRun(em(this.orm), input.runId);
      await appendAudit(em(this.orm), { runId: run.id, actor: user, action: 'term.input', result: 'denied', metadata: { reason: 'no live write grant', bytes: input.data.length } }, this.clock.date());
      throw new AppError({ code: ErrorCode.FORBIDDEN, message: `you hold no live write grant on run ${input.runId}: the terminal is read-only for you` });
    }
    if (!live.worker_id || live.status !== 'running') {
      throw new AppError({ code: ErrorCode.STATE_CONFLICT, message: `run ${input.runId} is ${live.status}: its terminal takes no input` });
    }
    await this.notifier.termInput(live.worker_id, input);
  }

  // ── helpers ────────────────────────────────────────────────────────────────

  private async announce(grant: WriteGrantRow): Promise<void> {
    this.notifier.grantUpdated(grantView(grant));
    await this.publish(grant.runId);
  }

  private async publish(runId: string): Promise<void> {
    await this.runs.publish(runId);
  }

  private withAttachData(grant: WriteGrantRow, session: LiveSessionRow): GrantWriteResponse {
    const response: GrantWriteResponse = { session: sessionView(session), grant: grantView(grant), grantedUntil: grant.expiresAt.toISOString() };
    if (!session.attachRwEnc) return response;
    const rw = JSON.parse(this.opener.open(session.attachRwEnc, session.id)) as Record<string, string>;
    const { tmate_web: webRw, ...attachRw } = rw;
    return { ...response, attachRw, ...(webRw ? { webRw } : {}) };
  }

  /** A requested grant length in ms: the default, or 1 minute up to LIVE_RW_GRANT_MAX_TTL (else VALIDATION). */
  requestedTtl(ttlMinutes: number | undefined): number {
    if (ttlMinutes === undefined) return Math.min(this.options.ttlMs, this.options.maxTtlMs);
    return boundedTtlMs(ttlMinutes, this.options.maxTtlMs, 'LIVE_RW_GRANT_MAX_TTL');
  }

  private async targetSession(tx: Em, runId: string, target: GrantTarget): Promise<LiveSessionRow> {
    const active = await tx.find(LiveSessionSchema, { runId, status: { $in: ['STARTING', 'READY'] } }, { orderBy: { createdAt: 'desc' } });
    const pick = target.provider
      ? active.find((s) => s.provider === target.provider)
      : ((target.preferWeb ? active.find((s) => s.provider === 'web' && s.status === 'READY') : undefined) ?? active[0]);
    if (!pick) {
      throw new AppError({ code: ErrorCode.STATE_CONFLICT, message: `run ${runId} has no active ${target.provider ?? ''} live session: write access needs a READY one`.replace('  ', ' ') });
    }
    if (pick.status !== 'READY') {
      throw new AppError({ code: ErrorCode.STATE_CONFLICT, message: `the ${pick.provider} live session of run ${runId} is ${pick.status}: write access needs it READY` });
    }
    return pick;
  }
}
