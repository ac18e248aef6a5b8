import { AppError, ErrorCode, type ApprovalRequest, type Role } from '@handoff/shared';
import { ApprovalSchema, type Approval } from '../db/entities.js';
import { em, type Orm } from '../db/orm.js';
import { roleAtLeast } from '../domain/roles.js';
import type { PolicyAction } from '../domain/policy.js';
import { appendAudit, SYSTEM } from './audit.js';
import { uuidv7 } from './ids.js';
import type { Notifier } from './notifier.js';
import type { ApprovalRequester, UserActor } from './policy-gate.js';

/** Replays an approved command as its requester (the approval stands in for the policy). */
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
    private readonly timeoutMs: number,
  ) {}

  register(action: PolicyAction, executor: ApprovedExecutor): void {
    this.executors.set(action, executor);
  }

  async request(opts: { action: PolicyAction; actor: UserActor; runId: string | null; params: Record<string, unknown>; approverRoles: Role[]; ruleId: string }): Promise<string> {
    const now = new Date();
    const row = await em(this.orm).transactional(async (tx) => {
      const a = tx.create(ApprovalSchema, {
        id: uuidv7(), runId: opts.runId, action: opts.action,
        context: { params: opts.params, requester: { id: opts.actor.id, name: opts.actor.name, role: opts.actor.role }, ruleId: opts.ruleId },
        requesterId: opts.actor.id, approverRoles: opts.approverRoles, status: 'pending', createdAt: now,
        expiresAt: new Date(now.getTime() + this.timeoutMs), resolvedAt: null, resolvedBy: null, reason: null,
      });
      await tx.flush();
      // Every step of one request shares its id as correlation id (and so does the replayed command).
      await appendAudit(tx, { runId: opts.runId, actor: opts.actor, correlationId: a.id, action: stepAction(opts.action, 'requested'), result: 'pending', metadata: { approvalId: a.id, requestedAction: opts.action, params: opts.params, ruleId: opts.ruleId } });
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
    const ctx = row.context as { params: Record<string, unknown>; requester: { id: string; name: string; role: Role } };
    const executor = this.executors.get(row.action);
    let outcome: unknown;
    try {
      if (!executor) throw new AppError({ code: ErrorCode.INTERNAL, message: `no executor for ${row.action}` });
      const result = await executor({ type: 'operator', id: ctx.requester.id, name: ctx.requester.name, role: ctx.requester.role }, row.runId ?? null, ctx.params, id);
      outcome = { ok: true, result };
    } catch (err) {
      const e = err instanceof AppError ? err : new AppError({ code: ErrorCode.INTERNAL, message: 'the approved action failed', cause: err });
      outcome = { ok: false, error: { code: e.code, message: e.message } };
    }
    // The outcome lives with the request (the approval row is not an audit row).
    await em(this.orm).nativeUpdate(ApprovalSchema, { id }, { context: { ...row.context, outcome } });
    await em(this.orm).transactional((tx) =>
      appendAudit(tx, { runId: row.runId ?? null, actor: SYSTEM, correlationId: id, action: 'approval.executed', result: (outcome as { ok: boolean }).ok ? 'ok' : 'error', metadata: { approvalId: id, requestedAction: row.action, outcome } }),
    );
    const view = approvalView(await em(this.orm).findOneOrFail(ApprovalSchema, { id }));
    this.notifier.approvalUpdated(view);
    return view;
  }

  async deny(approver: UserActor, id: string, reason?: string): Promise<ApprovalRequest> {
    const row = await this.resolve(approver, id, 'denied', reason);
    const view = approvalView(row);
    this.notifier.approvalUpdated(view);
    return view;
  }

  /** Sweeper: pending requests past their expiry resolve as expired (= denied). */
  async expireDue(): Promise<void> {
    const rows = await em(this.orm).execute<{ id: string }[]>(
      `update approvals set status = 'expired', resolved_at = now(), reason = 'no decision within APPROVAL_TIMEOUT' where status = 'pending' and expires_at <= now() returning id`,
    );
    for (const { id } of rows) {
      const a = await em(this.orm).findOneOrFail(ApprovalSchema, { id });
      await em(this.orm).transactional((tx) => appendAudit(tx, { runId: a.runId ?? null, actor: SYSTEM, correlationId: id, action: stepAction(a.action, 'expired'), result: 'denied', metadata: { approvalId: id, requestedAction: a.action, reason: 'no decision within APPROVAL_TIMEOUT' } }));
      this.notifier.approvalUpdated(approvalView(a));
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
      const n = await tx.execute<{ id: string }[]>(
        `update approvals set status = ?, resolved_at = now(), resolved_by = ?, reason = ?, context = ? where id = ? and status = 'pending' and expires_at > now() returning id`,
        // The resolver's name goes with the request, like the requester's: the dashboard shows people, not ids.
        [to, approver.id, reason ?? null, JSON.stringify({ ...(a.context as object), resolver: { id: approver.id, name: approver.name } }), id],
      );
      if (!n.length) throw new AppError({ code: ErrorCode.EXPIRED, message: `approval ${id} has expired` });
      await appendAudit(tx, { runId: a.runId ?? null, actor: approver, correlationId: id, action: stepAction(a.action, to), result: to === 'approved' ? 'ok' : 'denied', metadata: { approvalId: id, requestedAction: a.action, reason: reason ?? null } });
      return tx.findOneOrFail(ApprovalSchema, { id }, { refresh: true });
    });
  }
}
