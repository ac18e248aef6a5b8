import { describe, expect, it } from 'vitest';
import { evaluate, policyFileSchema, type Policy, type PolicyContext } from './policy.js';

const alice = { id: 'u1', name: 'alice', role: 'operator' } as const;
const bob = { id: 'u2', name: 'bob', role: 'operator' } as const;
// 2025-01-06 is a Monday.
const monday10 = new Date('2025-01-06T10:00:00Z');
const ctx = (over: Partial<PolicyContext> = {}): PolicyContext => ({ now: monday10, ...over });
const policy = (rules: unknown[]): Policy => policyFileSchema.parse({ version: 1, rules });

describe('evaluate', () => {
  it('denies everything when there are no rules', () => {
    expect(evaluate(policy([]), 'run.create', alice, ctx())).toEqual({ decision: 'deny', reason: 'no rule allows run.create for operator' });
  });

  it('denies an unknown action even under a wildcard rule', () => {
    const p = policy([{ id: 'all', actions: ['*'], effect: 'allow' }]);
    expect(evaluate(p, 'run.delete', alice, ctx())).toEqual({ decision: 'deny', reason: 'unknown action "run.delete"' });
    expect(evaluate(p, 'run.create', alice, ctx())).toEqual({ decision: 'allow', ruleId: 'all' });
  });

  it('lets the first matching rule win', () => {
    const p = policy([
      { id: 'no-bob', users: ['bob'], actions: ['message.send'], effect: 'deny', description: 'bob is muted' },
      { id: 'ops', roles: ['operator'], actions: ['message.send'], effect: 'allow' },
    ]);
    expect(evaluate(p, 'message.send', bob, ctx())).toEqual({ decision: 'deny', reason: 'bob is muted', ruleId: 'no-bob' });
    expect(evaluate(p, 'message.send', alice, ctx())).toEqual({ decision: 'allow', ruleId: 'ops' });
  });

  it('returns approver roles for approve rules', () => {
    const p = policy([{ id: 'ext', actions: ['session.create.external'], effect: 'approve', approverRoles: ['admin'] }]);
    expect(evaluate(p, 'session.create.external', alice, ctx({ provider: 'tmate' }))).toEqual({
      decision: 'needs-approval',
      approverRoles: ['admin'],
      ruleId: 'ext',
    });
  });

  it('matches providers, and never without one', () => {
    const p = policy([{ id: 'web', actions: ['session.create'], providers: ['web'], effect: 'allow' }]);
    expect(evaluate(p, 'session.create', alice, ctx({ provider: 'web' })).decision).toBe('allow');
    expect(evaluate(p, 'session.create', alice, ctx({ provider: 'upterm' })).decision).toBe('deny');
    expect(evaluate(p, 'session.create', alice, ctx()).decision).toBe('deny');
  });

  it('bounds TTLs: above the max, or unknown, skips the rule', () => {
    const p = policy([{ id: 'short', actions: ['rw.grant'], maxTtlMinutes: 30, effect: 'allow' }]);
    expect(evaluate(p, 'rw.grant', alice, ctx({ ttlMinutes: 30 })).decision).toBe('allow');
    expect(evaluate(p, 'rw.grant', alice, ctx({ ttlMinutes: 31 })).decision).toBe('deny');
    expect(evaluate(p, 'rw.grant', alice, ctx({ ttlMinutes: Number.NaN })).decision).toBe('deny');
    expect(evaluate(p, 'rw.grant', alice, ctx()).decision).toBe('deny');
  });

  it('requires every listed run label, ignoring inherited properties', () => {
    const p = policy([{ id: 'staging', actions: ['takeover'], runLabels: { env: 'staging', team: 'infra' }, effect: 'allow' }]);
    expect(evaluate(p, 'takeover', alice, ctx({ runLabels: { env: 'staging', team: 'infra', x: 'y' } })).decision).toBe('allow');
    expect(evaluate(p, 'takeover', alice, ctx({ runLabels: { env: 'staging' } })).decision).toBe('deny');
    expect(evaluate(p, 'takeover', alice, ctx({ runLabels: { env: 'prod', team: 'infra' } })).decision).toBe('deny');
    expect(evaluate(p, 'takeover', alice, ctx()).decision).toBe('deny');
    const q = policy([{ id: 'ctor', actions: ['takeover'], runLabels: { constructor: 'x' }, effect: 'allow' }]);
    expect(evaluate(q, 'takeover', alice, ctx({ runLabels: {} })).decision).toBe('deny');
  });

  describe('time windows (UTC)', () => {
    const office = policy([
      { id: 'office', actions: ['takeover'], timeWindow: { days: ['mon', 'tue', 'wed', 'thu', 'fri'], from: '09:00', to: '17:00' }, effect: 'allow' },
    ]);
    const night = policy([{ id: 'night', actions: ['takeover'], timeWindow: { from: '22:00', to: '06:00' }, effect: 'allow' }]);
    it.each([
      ['2025-01-06T09:00:00Z', office, 'allow'], // from is inclusive
      ['2025-01-06T16:59:59Z', office, 'allow'],
      ['2025-01-06T17:00:00Z', office, 'deny'], // to is exclusive
      ['2025-01-06T08:59:00Z', office, 'deny'],
      ['2025-01-04T10:00:00Z', office, 'deny'], // Saturday
      ['2025-01-06T23:30:00Z', night, 'allow'], // spans midnight
      ['2025-01-07T05:59:00Z', night, 'allow'],
      ['2025-01-07T06:00:00Z', night, 'deny'],
      ['2025-01-07T12:00:00Z', night, 'deny'],
    ] as const)('%s', (iso, p, decision) => {
      expect(evaluate(p, 'takeover', alice, ctx({ now: new Date(iso) })).decision).toBe(decision);
    });
  });
});

describe('policyFileSchema', () => {
  it.each([
    ['approve without approverRoles', { version: 1, rules: [{ id: 'a', actions: ['rw.grant'], effect: 'approve' }] }, 'rules.0.approverRoles'],
    ['approverRoles on allow', { version: 1, rules: [{ id: 'a', actions: ['rw.grant'], effect: 'allow', approverRoles: ['admin'] }] }, 'rules.0.approverRoles'],
    ['an unknown action', { version: 1, rules: [{ id: 'a', actions: ['rw.grnt'], effect: 'allow' }] }, 'rules.0.actions.0'],
    ['a misspelt field', { version: 1, rules: [{ id: 'a', actions: ['*'], role: ['admin'], effect: 'allow' }] }, 'rules.0'],
    ['a duplicate id', { version: 1, rules: [{ id: 'a', actions: ['*'], effect: 'deny' }, { id: 'a', actions: ['*'], effect: 'deny' }] }, 'rules.1.id'],
    ['a bad time', { version: 1, rules: [{ id: 'a', actions: ['*'], effect: 'deny', timeWindow: { from: '9:00' } }] }, 'rules.0.timeWindow.from'],
    ['another version', { version: 2, rules: [] }, 'version'],
  ])('rejects %s', (_name, input, path) => {
    const result = policyFileSchema.safeParse(input);
    expect(result.success).toBe(false);
    expect(result.error?.issues.map((i) => i.path.join('.'))).toContain(path);
  });
});
