import { AppError, ErrorCode, type ApprovalRequest, type Clock, type Provider, type Role } from '@handoff/shared';
import { ApprovalSchema, RunSchema, UserSchema, type Approval } from '../infra/db/entities.js';
import { em, type Orm } from '../infra/db/orm.js';
import { roleAtLeast } from '../domain/roles.js';
import type { PolicyAction } from '../domain/policy.js';
import { appendAudit, SYSTEM } from '../audit/audit-append.js';
import { uuidv7 } from '../infra/ids.js';
import type { Notifier } from '../hooks/notifier.js';
import type { ApprovalRequester, PolicyEvaluator, UserActor } from '../policy/policy-gate.js';
import { approvedWithoutOutcome, correlatedAuditExists, expireIfDue, pendingPastExpiry, recordOutcome, resolvePending } from './approval-queries.js';

/** Replays an approved command as its requester; `approvalId` doubles as the command's correlation id. */
export type ApprovedExecutor = (requester: UserActor, runId: string | null, params: Record<string, unknown>, approvalId: string) => Promise<unknown>;

/**
 * The audit name of an approval step. A takeover's steps are the handoff's own
 * (DESIGN.md §2 Handoff: `handoff.requested/approved/denied`); others are `approval.*`.
 */
function stepAction(requestedAction: string, step: 'requested' | 'approved' | 'denied' | 'expired'): string {
  if (requestedAction !== 'takeover') return `approval.${step}`;
  return `handoff.${step === 'expired' ? 'denied' : step}`;
}


export function approvalView(a: Approval): ApprovalRequest {
  const ctx = a.context as { params?: Record<string, unknown>; requester?: ApprovalRequest['requester']; resolver?: { name: string }; outcome?: unknown };
  return {
    id: a.id, runId: a.runId ?? null, action: a.action, params: ctx.params ?? {}, requester: ctx.requester ?? { id: a.requesterId, name: '?', role: '?' },
    approverRoles: a.approverRoles, status: a.status as ApprovalRequest['status'], createdAt: a.createdAt.toISOString(), expiresAt: a.expiresAt.toISOString(),
    resolvedAt: a.resolvedAt?.toISOString() ?? null, resolvedBy: a.resolvedBy ?? null, resolvedByName: ctx.resolver?.name ?? null, reason: a.reason ?? null, outcome: ctx.outcome ?? null,
  };
}

/**
 * The approval chain: a needs-approval command becomes a pending request, pushed live;
 * someone other than the requester with an approver role approves (the command then runs,
 * as the requester) or denies; unanswered requests expire as denied.
 */
export class ApprovalService implements ApprovalRequester {
  private readonly executors = new Map<string, ApprovedExecutor>();

  constructor(
    private readonly orm: Orm,
    private readonly notifier: Notifier,
    /** Re-checks the requester at execution: the approval stands in for `approve`, never for a lost right. */
    private readonly policy: PolicyEvaluator,
    private readonly clock: Clock,
    private readonly timeoutMs: number,
  ) {}

  register(action: PolicyAction, executor: ApprovedExecutor): void {
    this.executors.set(action, executor);
  }

  async request(opts: { action: PolicyAction; actor: UserActor; runId: string | null; params: Record<string, unknown>; approverRoles: Role[]; ruleId: string }): Promise<string> {
    const now = this.clock.date();
    const row = await em(this.orm).transactional(async (tx) => {
      const a = tx.create(ApprovalSchema, {
        id: uuidv7(), runId: opts.runId, action: opts.action,
        context: { params: opts.params, requester: { id: opts.actor.id, name: opts.actor.name, role: opts.actor.role }, ruleId: opts.ruleId },
        requesterId: opts.actor.id, approverRoles: opts.approverRoles, status: 'pending', createdAt: now,
        expiresAt: new Date(now.getTime() + this.timeoutMs), resolvedAt: null, resolvedBy: null, reason: null,
      });
      await tx.flush();
      // Every step of one request shares its id as correlation id (and so does the replayed command).
      await appendAudit(tx, { runId: opts.runId, actor: opts.actor, correlationId: a.id, action: stepAction(opts.action, 'requested'), result: 'pending', metadata: { approvalId: a.id, requestedAction: opts.action, params: opts.params, ruleId: opts.ruleId } }, this.clock.date());
      return a;
    });
    this.notifier.approvalUpdated(approvalView(row));
    return row.id;
  }

  async list(status?: string): Promise<ApprovalRequest[]> {
    const rows = await em(this.orm).find(ApprovalSchema, status ? { status } : {}, { orderBy: { createdAt: 'desc' }, limit: 200 });
    return rows.map(approvalView);
  }

  async approve(approver: UserActor, id: string, reason?: string): Promise<ApprovalRequest> {
    const row = await this.resolve(approver, id, 'approved', reason);
    return this.execute(row);
  }

  /**
   * Sweeper (leader) chore: an approved request whose command never ran — the node crashed
   * between the approval and the execution — runs now, once (see `execute`).
   */
  async executeApproved(): Promise<void> {
    const rows = await approvedWithoutOutcome(em(this.orm));
    for (const { id } of rows) {
      const a = await em(this.orm).findOne(ApprovalSchema, { id });
      if (a) await this.execute(a);
    }
  }

  /**
   * Runs an approved command as its requester — with the requester's *current* role and
   * status: one who was disabled, or whom the policy now denies the action, is refused
   * (audited). Exactly once: a command's effect and its audit rows commit together and
   * carry the approval's id as correlation id, so rows beyond the approval's own steps mean
   * it already ran (before a crash) and it is not run again.
   */
  private async execute(row: Approval): Promise<ApprovalRequest> {
    const id = row.id;
    const ctx = row.context as { params: Record<string, unknown>; requester: { id: string; name: string; role: Role }; outcome?: unknown };
    if (ctx.outcome !== undefined) return approvalView(row);
    let outcome: unknown;
    try {
      if (await this.alreadyRan(row)) {
        outcome = { ok: true, result: null, recovered: true };
      } else {
        const requester = await this.currentRequester(row);
        const executor = this.executors.get(row.action);
        if (!executor) throw new AppError({ code: ErrorCode.INTERNAL, message: `no executor for ${row.action}` });
        outcome = { ok: true, result: await executor(requester, row.runId ?? null, ctx.params, id) };
      }
    } catch (err) {
      const e = err instanceof AppError ? err : new AppError({ code: ErrorCode.INTERNAL, message: 'the approved action failed', cause: err });
      outcome = { ok: false, error: { code: e.code, message: e.message } };
    }
    const ok = (outcome as { ok: boolean }).ok;
    const denied = !ok && (outcome as { error: { code: string } }).error.code === ErrorCode.POLICY_DENIED;
    // Recorded once: a concurrent recovery on another node loses this conditional update.
    const recorded = await em(this.orm).transactional(async (tx) => {
      if (!(await recordOutcome(tx, id, { ...row.context, outcome }))) return false;
      await appendAudit(tx, { runId: row.runId ?? null, actor: SYSTEM, correlationId: id, action: 'approval.executed', result: ok ? 'ok' : denied ? 'denied' : 'error', metadata: { approvalId: id, requestedAction: row.action, outcome } }, this.clock.date());
      return true;
    });
    const view = approvalView(await em(this.orm).findOneOrFail(ApprovalSchema, { id }, { refresh: true }));
    if (recorded) this.notifier.approvalUpdated(view);
    return view;
  }

  /** Whether the approved command already committed (its audit rows carry the approval's id). */
  private async alreadyRan(row: Approval): Promise<boolean> {
    const steps = ['approval.requested', 'approval.approved', 'approval.denied', 'approval.expired', 'approval.executed', 'handoff.requested', 'handoff.approved', 'handoff.denied'];
    return correlatedAuditExists(em(this.orm), row.runId ?? null, row.id, steps);
  }

  /** The requester as they are now; refused if disabled or if the policy no longer lets them ask for this. */
  private async currentRequester(row: Approval): Promise<UserActor> {
    const ctx = row.context as { params: Record<string, unknown> };
    const user = await em(this.orm).findOne(UserSchema, { id: row.requesterId });
    if (!user || user.disabledAt) throw new AppError({ code: ErrorCode.POLICY_DENIED, message: 'the requester’s account is disabled: the approved action was not run' });
    const actor: UserActor = { type: 'operator', id: user.id, name: user.name, role: user.role as Role };
    const run = row.runId ? await em(this.orm).findOne(RunSchema, { id: row.runId }) : null;
    const params = ctx.params;
    const decision = this.policy.decide(row.action as PolicyAction, actor, {
      runId: row.runId ?? null,
      runLabels: run?.labels ?? ((params.body as { labels?: Record<string, string> } | undefined)?.labels ?? {}),
      ...(typeof params.provider === 'string' ? { provider: params.provider as Provider } : {}),
      ...(typeof params.ttlMinutes === 'number' ? { ttlMinutes: params.ttlMinutes } : {}),
    });
    if (decision.decision === 'deny') {
      throw new AppError({ code: ErrorCode.POLICY_DENIED, message: `the requester (now ${actor.role}) may no longer ${row.action}: ${decision.reason}` });
    }
    return actor;
  }

  async deny(approver: UserActor, id: string, reason?: string): Promise<ApprovalRequest> {
    const row = await this.resolve(approver, id, 'denied', reason);
    const view = approvalView(row);
    this.notifier.approvalUpdated(view);
    return view;
  }

  /** Sweeper: pending requests past their expiry resolve as expired (= denied). */
  async expireDue(): Promise<void> {
    const due = await pendingPastExpiry(em(this.orm));
    for (const { id } of due) {
      // The expiry and its audit row (and so its webhook event) commit together: a crash between them loses neither.
      const a = await em(this.orm).transactional(async (tx) => {
        if (!(await expireIfDue(tx, id))) return null;
        const row = await tx.findOneOrFail(ApprovalSchema, { id }, { refresh: true });
        await appendAudit(tx, { runId: row.runId ?? null, actor: SYSTEM, correlationId: id, action: stepAction(row.action, 'expired'), result: 'denied', metadata: { approvalId: id, requestedAction: row.action, reason: 'no decision within APPROVAL_TIMEOUT' } }, this.clock.date());
        return row;
      });
      if (a) this.notifier.approvalUpdated(approvalView(a));
    }
  }

  private async resolve(approver: UserActor, id: string, to: 'approved' | 'denied', reason?: string): Promise<Approval> {
    return em(this.orm).transactional(async (tx) => {
      const a = await tx.findOne(ApprovalSchema, { id });
      if (!a) throw new AppError({ code: ErrorCode.NOT_FOUND, message: `approval ${id} not found` });
      if (a.requesterId === approver.id) throw new AppError({ code: ErrorCode.FORBIDDEN, message: 'you cannot resolve your own request' });
      if (!a.approverRoles.some((r) => roleAtLeast(approver.role, r as Role))) {
        throw new AppError({ code: ErrorCode.FORBIDDEN, message: `only ${a.approverRoles.join(' or ')} can resolve this request` });
      }
      if (a.status !== 'pending') throw new AppError({ code: ErrorCode.STATE_CONFLICT, message: `approval ${id} is already ${a.status}` });
      // The resolver's name goes with the request, like the requester's: the dashboard shows people, not ids.
      const context = { ...(a.context as object), resolver: { id: approver.id, name: approver.name } };
      if (!(await resolvePending(tx, id, to, approver.id, reason ?? null, context))) throw new AppError({ code: ErrorCode.EXPIRED, message: `approval ${id} has expired` });
      await appendAudit(tx, { runId: a.runId ?? null, actor: approver, correlationId: id, action: stepAction(a.action, to), result: to === 'approved' ? 'ok' : 'denied', metadata: { approvalId: id, requestedAction: a.action, reason: reason ?? null } }, this.clock.date());
      return tx.findOneOrFail(ApprovalSchema, { id }, { refresh: true });
    });
  }
}
