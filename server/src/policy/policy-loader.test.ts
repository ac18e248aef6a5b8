import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Role } from '@handoff/shared';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { evaluate, POLICY_ACTIONS, type PolicyAction, type PolicyContext, type PolicyDecision } from '../domain/policy.js';
import { loadPolicy } from './policy-loader.js';

const now = new Date('2025-01-06T10:00:00Z'); // a Monday
const actor = (role: Role) => ({ id: `id-${role}`, name: `${role}-user`, role });
const decide = (d: PolicyDecision) => (d.decision === 'needs-approval' ? `approve:${d.approverRoles.join('|')}` : d.decision);

describe('default policy', () => {
  const policy = loadPolicy();
  // The context each action is checked with by the routes: a provider for sessions, a TTL for
  // TTL-bearing actions (within the default bounds).
  const contextOf: Partial<Record<PolicyAction, Omit<PolicyContext, 'now'>>> = {
    'session.create': { provider: 'web' },
    'session.create.external': { provider: 'tmate' },
    'session.extend': { ttlMinutes: 60 },
    'rw.grant': { ttlMinutes: 15 },
    takeover: { ttlMinutes: 15 },
    // Revoking a share or grant held by an operator (a revoke against an admin's is tested below).
    'session.revoke': { targetRoles: ['operator'] },
    'rw.revoke': { targetRoles: ['operator'] },
    'presence.kick': { targetRoles: ['observer'] },
  };
  const expected: Record<PolicyAction, Record<Role, string>> = {
    'presence.kick': { observer: 'deny', operator: 'allow', admin: 'allow' },
    'session.create': { observer: 'deny', operator: 'allow', admin: 'allow' },
    'session.create.external': { observer: 'deny', operator: 'approve:admin', admin: 'allow' },
    'session.extend': { observer: 'deny', operator: 'allow', admin: 'allow' },
    // An observer's request waits for an operator (or admin): rule observer-ask-write.
    'rw.grant': { observer: 'approve:operator|admin', operator: 'allow', admin: 'allow' },
    takeover: { observer: 'deny', operator: 'allow', admin: 'allow' },
    handback: { observer: 'deny', operator: 'allow', admin: 'allow' },
    'control.pause': { observer: 'deny', operator: 'allow', admin: 'allow' },
    'control.resume': { observer: 'deny', operator: 'allow', admin: 'allow' },
    'message.send': { observer: 'deny', operator: 'allow', admin: 'allow' },
    'audit.read': { observer: 'allow', operator: 'allow', admin: 'allow' },
    'run.create': { observer: 'deny', operator: 'allow', admin: 'allow' },
    'run.cancel': { observer: 'deny', operator: 'allow', admin: 'allow' },
    'session.revoke': { observer: 'deny', operator: 'allow', admin: 'allow' },
    'rw.revoke': { observer: 'deny', operator: 'allow', admin: 'allow' },
    'needs-operator.dismiss': { observer: 'deny', operator: 'allow', admin: 'allow' },
    'control.handback.force': { observer: 'deny', operator: 'deny', admin: 'allow' },
  };
  const table = POLICY_ACTIONS.flatMap((action) =>
    (['observer', 'operator', 'admin'] as const).map((role) => [action, role, expected[action][role]] as const),
  );

  it.each(table)('%s by %s → %s', (action, role, outcome) => {
    expect(decide(evaluate(policy, action, actor(role), { ...contextOf[action], now }))).toBe(outcome);
  });

  it.each([
    ['rw.revoke', ['admin'], 'deny'],
    ['rw.revoke', ['operator', 'admin'], 'deny'],
    ['rw.revoke', [], 'allow'],
    ['session.revoke', ['admin'], 'deny'],
    ['session.revoke', [], 'allow'],
  ] as const)('%s by an operator against %j → %s (an operator never cuts an admin’s write access)', (action, targetRoles, outcome) => {
    expect(decide(evaluate(policy, action, actor('operator'), { targetRoles: [...targetRoles], now }))).toBe(outcome);
    expect(decide(evaluate(policy, action, actor('admin'), { targetRoles: [...targetRoles], now }))).toBe('allow');
  });

  it('explains a default deny', () => {
    expect(evaluate(policy, 'takeover', actor('observer'), { now })).toEqual({ decision: 'deny', reason: 'no rule allows takeover for observer' });
  });

  it.each([
    [15, 'allow', 'operator-short-rw-grant'],
    [30, 'allow', 'operator-short-rw-grant'],
    [60, 'approve:admin', 'operator-long-rw-grant'],
  ] as const)('rw.grant for %i minutes by an operator → %s', (ttlMinutes, outcome, ruleId) => {
    const d = evaluate(policy, 'rw.grant', actor('operator'), { ttlMinutes, now });
    expect(decide(d)).toBe(outcome);
    expect(d).toMatchObject({ ruleId });
  });

  it.each([
    [30, 'allow', 'operator-short-takeover'],
    [31, 'approve:admin', 'operator-long-takeover'],
  ] as const)('takeover with a %i-minute write grant by an operator → %s', (ttlMinutes, outcome, ruleId) => {
    const d = evaluate(policy, 'takeover', actor('operator'), { ttlMinutes, now });
    expect(decide(d)).toBe(outcome);
    expect(d).toMatchObject({ ruleId });
  });

  it('bounds an operator extend at 240 minutes and external providers under session.create', () => {
    expect(evaluate(policy, 'session.extend', actor('operator'), { ttlMinutes: 241, now }).decision).toBe('deny');
    expect(evaluate(policy, 'session.create', actor('operator'), { provider: 'tmate', now }).decision).toBe('deny');
  });

  it('denies unknown actions, even to admins', () => {
    expect(evaluate(policy, 'run.delete', actor('admin'), { now })).toEqual({ decision: 'deny', reason: 'unknown action "run.delete"' });
  });
});

describe('policy files', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'handoff-policy-'));
  });
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  const write = (name: string, text: string) => {
    const path = join(dir, name);
    writeFileSync(path, text);
    return path;
  };
  const errorOf = (path: string) => {
    try {
      loadPolicy(path);
    } catch (err) {
      return (err as Error).message;
    }
    throw new Error('expected loadPolicy to throw');
  };

  it('applies time windows and run labels from a YAML file', () => {
    const policy = loadPolicy(
      write(
        'custom.yaml',
        [
          'version: 1',
          'rules:',
          '  - id: prod-office-hours',
          '    actions: [takeover]',
          '    roles: [operator]',
          '    runLabels: {env: prod}',
          "    timeWindow: {days: [mon, tue, wed, thu, fri], from: '09:00', to: '18:00', tz: UTC}",
          '    effect: allow',
          '  - id: staging-any-time',
          '    actions: [takeover]',
          '    runLabels: {env: staging}',
          '    effect: allow',
        ].join('\n'),
      ),
    );
    const op = actor('operator');
    const prod = { env: 'prod' };
    expect(evaluate(policy, 'takeover', op, { runLabels: prod, now })).toEqual({ decision: 'allow', ruleId: 'prod-office-hours' });
    expect(evaluate(policy, 'takeover', op, { runLabels: prod, now: new Date('2025-01-06T19:00:00Z') }).decision).toBe('deny');
    expect(evaluate(policy, 'takeover', op, { runLabels: prod, now: new Date('2025-01-05T10:00:00Z') }).decision).toBe('deny');
    expect(evaluate(policy, 'takeover', op, { runLabels: { env: 'staging' }, now: new Date('2025-01-05T03:00:00Z') }).decision).toBe('allow');
    expect(evaluate(policy, 'takeover', op, { runLabels: { env: 'dev' }, now }).decision).toBe('deny');
  });

  it('reads the same policy from JSON', () => {
    const path = write('p.json', JSON.stringify({ version: 1, rules: [{ id: 'a', actions: ['*'], roles: ['admin'], effect: 'allow' }] }));
    expect(evaluate(loadPolicy(path), 'audit.read', actor('admin'), { now }).decision).toBe('allow');
  });

  it('names the file and line of a YAML syntax error', () => {
    const path = write('broken.yaml', ['version: 1', 'rules:', '  - id: a', '    actions: [takeover', '    effect: allow'].join('\n'));
    expect(errorOf(path)).toMatch(new RegExp(`^invalid policy ${path}:[45]:\\d+: YAML syntax error`));
  });

  it('names the file, line and column of a duplicate YAML key', () => {
    const path = write('dup.yaml', ['version: 1', 'rules:', '  - id: a', '    actions: ["*"]', '    effect: deny', '    effect: allow'].join('\n'));
    expect(errorOf(path)).toMatch(new RegExp(`^invalid policy ${path}:6:5: YAML syntax error: .*unique`));
  });

  it('names the file, line and path of a schema error in YAML', () => {
    const path = write(
      'invalid.yaml',
      [
        '# a comment',
        'version: 1',
        'rules:',
        '  - id: ok',
        '    actions: [run.create]',
        '    effect: allow',
        '  - id: bad',
        '    actions: [run.create]',
        '    maxTtlMinutes: soon',
        '    effect: allow',
      ].join('\n'),
    );
    expect(errorOf(path)).toMatch(new RegExp(`^invalid policy ${path}:9:20: rules\\[1\\]\\.maxTtlMinutes: `));
  });

  it('points at a misspelt key, and at the rule for a missing one', () => {
    const typo = write('typo.yaml', ['version: 1', 'rules:', '  - id: a', '    actions: ["*"]', '    role: [admin]', '    effect: allow'].join('\n'));
    expect(errorOf(typo)).toMatch(new RegExp(`^invalid policy ${typo}:5:5: rules\\[0\\]: .*role`));
    const missing = write('missing.yaml', ['version: 1', 'rules:', '  - id: a', '    actions: ["*"]', '  - id: b', '    actions: ["*"]', '    effect: deny'].join('\n'));
    expect(errorOf(missing)).toMatch(new RegExp(`^invalid policy ${missing}:3:5: rules\\[0\\]\\.effect: `));
  });

  it('names the file and line of JSON syntax and schema errors', () => {
    const syntax = write('broken.json', '{\n  "version": 1,\n  "rules": [\n    {"id": "a",}\n  ]\n}\n');
    expect(errorOf(syntax)).toMatch(new RegExp(`^invalid policy ${syntax}:4:\\d+: JSON syntax error`));
    const schema = write('invalid.json', '{\n  "version": 1,\n  "rules": [\n    {"id": "a", "actions": ["*"],\n     "effect": "maybe"}\n  ]\n}\n');
    expect(errorOf(schema)).toMatch(new RegExp(`^invalid policy ${schema}:5:16: rules\\[0\\]\\.effect: `));
  });

  it('refuses unknown extensions and missing files by name', () => {
    expect(errorOf(write('p.toml', ''))).toMatch(/p\.toml: unsupported extension/);
    expect(errorOf(join(dir, 'absent.yaml'))).toMatch(/absent\.yaml could not be read/);
  });
});
