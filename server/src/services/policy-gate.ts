import { AppError, ErrorCode, type Provider, type Role } from '@handoff/shared';
import { UserSchema } from '../db/entities.js';
import { em, type Em, type Orm } from '../db/orm.js';
import { evaluate, type Policy, type PolicyAction, type PolicyDecision, type PolicyRole } from '../domain/policy.js';
import { appendAudit, SYSTEM, type Actor } from './audit.js';
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

/**
 * The deny-by-default gate every command passes (DESIGN.md §2 Policy gate). A denial is
 * audited with `result: denied` and answered POLICY_DENIED; needs-approval persists an
 * approval request and answers APPROVAL_REQUIRED (202) with its id.
 */
export class PolicyGate {
  approvals: ApprovalRequester | null = null;

  constructor(
    private readonly orm: Orm,
    private readonly policy: Policy,
  ) {}

  /** What the policy says, with no side effect (an approval re-checks its requester with it). */
  decide(action: PolicyAction, actor: GateActor, ctx: GateContext): PolicyDecision {
    return evaluate(this.policy, action, actor, { ...ctx, now: new Date() });
  }

  async check(action: PolicyAction, actor: GateActor, ctx: GateContext, params: Record<string, unknown> = {}): Promise<void> {
    const decision = evaluate(this.policy, action, actor, { ...ctx, now: new Date() });
    if (decision.decision === 'allow') return;
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
    await em(this.orm).transactional((tx) =>
      appendAudit(tx, { runId, actor, action, result: 'denied', metadata: { reason, ruleId: decision.ruleId ?? null, provider: ctx.provider ?? null, ttlMinutes: ctx.ttlMinutes ?? null } }),
    );
    throw new AppError({ code: ErrorCode.POLICY_DENIED, message: `${action} denied: ${reason}` });
  }
}
