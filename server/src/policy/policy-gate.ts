import { AppError, ErrorCode, type Clock, type Provider, type Role } from '@handoff/shared';
import { UserSchema } from '../infra/db/entities.js';
import { em, type Em, type Orm } from '../infra/db/orm.js';
import { evaluate, type Policy, type PolicyAction, type PolicyDecision, type PolicyRole } from '../domain/policy.js';
import { appendAudit, SYSTEM, type Actor } from '../audit/audit-append.js';
import { metrics } from '../metrics.js';

/** A user acting through the API: what the policy needs to know about them. */
export type UserActor = Actor & { name: string; role: Role };

/** The acting user behind an authenticated user principal (REST or dashboard socket). */
export function userActor(p: { id: string; name: string; role: Role }): UserActor {
  return { type: 'operator', id: p.id, name: p.name, role: p.role };
}

/** Commands by users pass the gate; the system's own (e.g. a run's default web share) do not, unless named below. */
export const isUser = (actor: Actor): actor is UserActor => 'role' in actor && (actor as { role: string }).role !== 'system';

/** Who the policy sees: a user, or the hub itself (role `system`) for what its configuration asks (a per-run tmate share). */
export type GateActor = Actor & { name: string; role: PolicyRole };

/** The hub as the policy sees it: policy rules name it with `roles: [system]`. */
export const SYSTEM_GATE_ACTOR: GateActor = { ...SYSTEM, name: 'hub', role: 'system' };

/** Options of a command replayed after approval: the approval stands in for the policy. */
export interface CommandOptions {
  approved?: boolean;
  /** The approval's id: the replayed command's audit rows carry it as their correlation id. */
  correlationId?: string;
}

export interface GateContext {
  runId?: string | null;
  runLabels?: Record<string, string>;
  provider?: Provider;
  ttlMinutes?: number;
  /** Roles of the users the command acts against (the holders of grants a revoke would end). */
  targetRoles?: Role[];
}

/** The roles of the given users (for `targetRoles`): whom a revoke would act against. */
export async function rolesOf(tx: Em, userIds: string[]): Promise<Role[]> {
  if (!userIds.length) return [];
  const users = await tx.find(UserSchema, { id: { $in: [...new Set(userIds)] } });
  return [...new Set(users.map((u) => u.role as Role))];
}

/** Where needs-approval decisions go: a persisted request that can replay the command. */
export interface ApprovalRequester {
  request(opts: { action: PolicyAction; actor: UserActor; runId: string | null; params: Record<string, unknown>; approverRoles: Role[]; ruleId: string }): Promise<string>;
}

/** The loaded policy, evaluated at the injected clock's time: no side effect (an approval re-checks its requester with it). */
export class PolicyEvaluator {
  constructor(
    private readonly policy: Policy,
    private readonly clock: Clock,
  ) {}

  decide(action: PolicyAction, actor: GateActor, ctx: GateContext): PolicyDecision {
    return evaluate(this.policy, action, actor, { ...ctx, now: this.clock.date() });
  }
}

/**
 * The deny-by-default gate every command passes (DESIGN.md §2 Policy gate). A denial is
 * audited with `result: denied` and answered POLICY_DENIED; needs-approval persists an
 * approval request and answers APPROVAL_REQUIRED (202) with its id.
 */
export class PolicyGate {
  constructor(
    private readonly orm: Orm,
    private readonly policy: PolicyEvaluator,
    /** Where needs-approval goes; without one, needs-approval is a denial. */
    private readonly approvals: ApprovalRequester | null,
    private readonly clock: Clock,
  ) {}

  /** What the policy says, with no side effect (a command deciding inside its transaction). */
  decide(action: PolicyAction, actor: GateActor, ctx: GateContext): PolicyDecision {
    return this.policy.decide(action, actor, ctx);
  }

  async check(action: PolicyAction, actor: GateActor, ctx: GateContext, params: Record<string, unknown> = {}): Promise<void> {
    const decision = this.policy.decide(action, actor, ctx);
    if (decision.decision === 'allow') return;
    await this.refuse(action, actor, ctx, decision, params);
  }

  /**
   * Acts on a decision other than allow, made by `decide` (e.g. inside a command's transaction,
   * on the row it locked, which is then rolled back): audits the denial or files the approval
   * request, and throws POLICY_DENIED / APPROVAL_REQUIRED.
   */
  async refuse(action: PolicyAction, actor: GateActor, ctx: GateContext, decision: Exclude<PolicyDecision, { decision: 'allow' }>, params: Record<string, unknown> = {}): Promise<never> {
    const runId = ctx.runId ?? null;
    // Nobody can approve on the hub's behalf: for the system actor "approve" means no.
    if (decision.decision === 'needs-approval' && this.approvals && isUser(actor)) {
      metrics.policyRefusals.inc({ action, outcome: 'approval_required' });
      const approvalId = await this.approvals.request({ action, actor, runId, params, approverRoles: decision.approverRoles, ruleId: decision.ruleId });
      throw new AppError({
        code: ErrorCode.APPROVAL_REQUIRED,
        message: `${action} needs approval by ${decision.approverRoles.join(' or ')}; request ${approvalId} is pending`,
        details: { approvalId, approverRoles: decision.approverRoles },
      });
    }
    metrics.policyRefusals.inc({ action, outcome: 'denied' });
    const reason = decision.decision === 'deny' ? decision.reason : 'needs approval, and approvals are unavailable';
    await appendAudit(em(this.orm), { runId, actor, action, result: 'denied', metadata: { reason, ruleId: decision.ruleId ?? null, provider: ctx.provider ?? null, ttlMinutes: ctx.ttlMinutes ?? null } }, this.clock.date());
    throw new AppError({ code: ErrorCode.POLICY_DENIED, message: `${action} denied: ${reason}` });
  }
}
