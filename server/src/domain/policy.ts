import { roleSchema, providerSchema, type Provider, type Role } from '@handoff/shared';
import { z } from 'zod';

// The deny-by-default policy gate (DESIGN.md §2 "Policy gate and approvals"). Pure: the
// caller passes the clock (`now`) and everything else the rules look at.

/** Every privileged action the gate knows. Reads are not gated (except `audit.read`). */
export const PolicyAction = {
  sessionCreate: 'session.create',
  sessionCreateExternal: 'session.create.external',
  sessionExtend: 'session.extend',
  rwGrant: 'rw.grant',
  takeover: 'takeover',
  handback: 'handback',
  controlPause: 'control.pause',
  controlResume: 'control.resume',
  messageSend: 'message.send',
  auditRead: 'audit.read',
  runCreate: 'run.create',
  runCancel: 'run.cancel',
  /** End a live share now (its viewers are cut off, grants issued on it end). */
  sessionRevoke: 'session.revoke',
  /** End someone's (or one's own) write grant. */
  rwRevoke: 'rw.revoke',
  /** Clear an agent's request for an operator. */
  needsOperatorDismiss: 'needs-operator.dismiss',
  /** An admin ends another operator's takeover (hand back on their behalf). */
  controlHandbackForce: 'control.handback.force',
  /** Remove one viewer from a run's live view (their connections cut, their write grant ended). */
  presenceKick: 'presence.kick',
} as const;
export type PolicyAction = (typeof PolicyAction)[keyof typeof PolicyAction];
export const POLICY_ACTIONS = Object.values(PolicyAction) as [PolicyAction, ...PolicyAction[]];
export const policyActionSchema = z.enum(POLICY_ACTIONS);

/** What a matching rule does. */
export const PolicyEffect = { allow: 'allow', deny: 'deny', approve: 'approve' } as const;
export type PolicyEffect = (typeof PolicyEffect)[keyof typeof PolicyEffect];

// Index = Date#getUTCDay().
const DAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'] as const;
const hhmm = z.string().regex(/^(?:[01]\d|2[0-3]):[0-5]\d$|^24:00$/, 'expected HH:MM (00:00–24:00)');

const timeWindowSchema = z.strictObject({
  /** Days the rule applies on (the day of `now` in `tz`); all days when absent. */
  days: z.array(z.enum(DAYS)).min(1).optional(),
  /** Start, inclusive, HH:MM; 00:00 when absent. */
  from: hhmm.optional(),
  /** End, exclusive, HH:MM; 24:00 when absent. `from` > `to` spans midnight (22:00–06:00). */
  to: hhmm.optional(),
  /** Only UTC for now: the gate must not depend on the host's zone database. */
  tz: z.literal('UTC').default('UTC'),
});

/** Roles a rule may name: the users' roles, and `system` for the hub's own commands (e.g. the share LIVE_SESSION_PROVIDER asks for). */
const policyRoleSchema = z.enum([...roleSchema.options, 'system']);
export type PolicyRole = z.infer<typeof policyRoleSchema>;

// Strict objects: a typo such as `role:` for `roles:` would otherwise silently widen a rule.
const ruleSchema = z
  .strictObject({
    id: z.string().min(1),
    description: z.string().optional(),
    /** Actions the rule covers; `*` = all of them (never an unknown one). */
    actions: z.array(z.enum([...POLICY_ACTIONS, '*'])).min(1),
    /** The actor's role must be one of these (`system`: the hub acting on its configuration). */
    roles: z.array(policyRoleSchema).min(1).optional(),
    /** The actor's user name must be one of these. */
    users: z.array(z.string().min(1)).min(1).optional(),
    /** Every label here must be on the run with the same value. */
    runLabels: z.record(z.string(), z.string()).optional(),
    /** The session provider must be one of these (a context without a provider does not match). */
    providers: z.array(providerSchema).min(1).optional(),
    /**
     * Every user the command acts against (the holders of the write grants a revoke would
     * end) must have one of these roles; a command against nobody matches.
     */
    targetRoles: z.array(roleSchema).min(1).optional(),
    /** The requested TTL must be given and ≤ this many minutes, else the rule does not match. */
    maxTtlMinutes: z.number().positive().optional(),
    timeWindow: timeWindowSchema.optional(),
    effect: z.enum(Object.values(PolicyEffect) as [PolicyEffect, ...PolicyEffect[]]),
    /** Who may approve; required with `effect: approve`, refused otherwise. */
    approverRoles: z.array(roleSchema).min(1).optional(),
  })
  .superRefine((rule, ctx) => {
    if (rule.effect === 'approve' && !rule.approverRoles) {
      ctx.addIssue({ code: 'custom', path: ['approverRoles'], message: 'approverRoles is required when effect is approve' });
    }
    if (rule.effect !== 'approve' && rule.approverRoles) {
      ctx.addIssue({ code: 'custom', path: ['approverRoles'], message: 'approverRoles only applies to effect approve' });
    }
  });

/** A policy file (YAML or JSON). Rules are tried in order; the first match decides. */
export const policyFileSchema = z
  .strictObject({
    version: z.literal(1),
    rules: z.array(ruleSchema),
  })
  .superRefine((policy, ctx) => {
    const seen = new Set<string>();
    policy.rules.forEach((rule, i) => {
      if (seen.has(rule.id)) ctx.addIssue({ code: 'custom', path: ['rules', i, 'id'], message: `duplicate rule id "${rule.id}"` });
      seen.add(rule.id);
    });
  });
export type Policy = z.infer<typeof policyFileSchema>;
export type PolicyRule = Policy['rules'][number];

export interface PolicyActor {
  id: string;
  name: string;
  role: PolicyRole;
}

export interface PolicyContext {
  runLabels?: Record<string, string>;
  provider?: Provider;
  /** The effective TTL of what is requested (defaults already applied), in minutes. */
  ttlMinutes?: number;
  /** Roles of the users the command acts against (e.g. holders of the grants a revoke ends). */
  targetRoles?: Role[];
  now: Date;
}

export type PolicyDecision =
  | { decision: 'allow'; ruleId: string }
  | { decision: 'deny'; reason: string; ruleId?: string }
  | { decision: 'needs-approval'; approverRoles: Role[]; ruleId: string };

const minutesOf = (t: string) => Number(t.slice(0, 2)) * 60 + Number(t.slice(3, 5));

function inWindow(window: NonNullable<PolicyRule['timeWindow']>, now: Date): boolean {
  const day = DAYS[now.getUTCDay()];
  if (window.days && (!day || !window.days.includes(day))) return false;
  const minute = now.getUTCHours() * 60 + now.getUTCMinutes();
  const from = window.from ? minutesOf(window.from) : 0;
  const to = window.to ? minutesOf(window.to) : 24 * 60;
  return from <= to ? minute >= from && minute < to : minute >= from || minute < to;
}

function matches(rule: PolicyRule, action: PolicyAction, actor: PolicyActor, ctx: PolicyContext): boolean {
  if (!rule.actions.includes('*') && !rule.actions.includes(action)) return false;
  if (rule.roles && !rule.roles.includes(actor.role)) return false;
  if (rule.users && !rule.users.includes(actor.name)) return false;
  if (rule.providers && (!ctx.provider || !rule.providers.includes(ctx.provider))) return false;
  // No TTL given means "unknown", and an unknown TTL must not pass a TTL bound.
  if (rule.maxTtlMinutes !== undefined && (ctx.ttlMinutes === undefined || !(ctx.ttlMinutes <= rule.maxTtlMinutes))) return false;
  if (rule.runLabels) {
    for (const [k, v] of Object.entries(rule.runLabels)) {
      if (!ctx.runLabels || !Object.hasOwn(ctx.runLabels, k) || ctx.runLabels[k] !== v) return false;
    }
  }
  if (rule.targetRoles && !(ctx.targetRoles ?? []).every((r) => rule.targetRoles!.includes(r))) return false;
  if (rule.timeWindow && !inWindow(rule.timeWindow, ctx.now)) return false;
  return true;
}

const isAction = (a: string): a is PolicyAction => (POLICY_ACTIONS as readonly string[]).includes(a);

/**
 * Decides `action` for `actor`: the first rule that matches wins; when none does, or the
 * action is unknown, the answer is deny.
 */
export function evaluate(policy: Policy, action: string, actor: PolicyActor, context: PolicyContext): PolicyDecision {
  if (!isAction(action)) return { decision: 'deny', reason: `unknown action "${action}"` };
  const rule = policy.rules.find((r) => matches(r, action, actor, context));
  if (!rule) return { decision: 'deny', reason: `no rule allows ${action} for ${actor.role}` };
  switch (rule.effect) {
    case 'allow':
      return { decision: 'allow', ruleId: rule.id };
    case 'deny':
      return { decision: 'deny', reason: rule.description ?? `denied by policy rule "${rule.id}"`, ruleId: rule.id };
    case 'approve':
      return { decision: 'needs-approval', approverRoles: rule.approverRoles ?? [], ruleId: rule.id };
  }
}
