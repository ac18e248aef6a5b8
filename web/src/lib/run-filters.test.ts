import type { LiveSession, Run } from '@handoff/shared';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { approvalAttention, badgedTitle, Notifications, runAttention } from './notifications.svelte.js';
import { attentionFirst, filterParams, matchesFilters, NO_FILTERS } from './run-filters.js';
import { RunsStore } from './runs.svelte.js';
import { shareTone } from './share-tone.js';

function session(provider: LiveSession['provider'], status: LiveSession['status'], over: Partial<LiveSession> = {}): LiveSession {
  return {
    id: `s-${provider}`, revision: 1, runId: 'r', provider, status, workerId: 'w', correlationId: 'c',
    createdAt: '2026-01-01T00:00:00Z', readyAt: null, endedAt: null, expiresAt: '2026-01-01T01:00:00Z',
    graceWarnedAt: null, lastHeartbeatAt: null, endReason: null, errorMessage: null, attachRo: null, ...over,
  };
}

function run(id: string, over: Partial<Run> = {}): Run {
  return {
    id, revision: 1, title: 'deploy api', command: { script: 'true' }, cwd: null, env: {}, labels: { env: 'prod' }, status: 'running',
    createdBy: 'u1', createdByName: 'Alice', workerId: 'w1', workerName: 'build-box', exitCode: null, errorMessage: null,
    control: { state: 'agent', seq: 0, appliedSeq: 0, mode: null, controllerId: null, by: null },
    writeGrants: [], needsOperator: null, liveSessionEnabled: true,
    createdAt: '2026-01-01T00:00:00Z', assignedAt: null, startedAt: null, endedAt: null, sessions: [],
    ...over,
  };
}

describe('run filters: the hub’s rules in the browser', () => {
  it('text matches title, label key/value/key:value, creator, worker and id prefix, case-insensitively', () => {
    const r = run('01aa0000-0000-7000-8000-000000000001');
    for (const q of ['DEPLOY', 'env', 'prod', 'env:prod', 'alice', 'BUILD-box', '01aa00', '  api  ']) expect(matchesFilters(r, { ...NO_FILTERS, q }), q).toBe(true);
    for (const q of ['staging', 'env:staging', '000001', 'bob']) expect(matchesFilters(r, { ...NO_FILTERS, q }), q).toBe(false);
  });

  it('status, control, needs-operator and share filters combine with AND', () => {
    const asking = run('a', { needsOperator: { reason: 'r', at: '2026-01-01T00:01:00Z' }, sessions: [session('web', 'READY')] });
    const paused = run('b', { control: { state: 'paused', seq: 1, appliedSeq: 1, mode: 'soft', controllerId: null, by: null }, sessions: [session('tmate', 'STARTING')] });
    const f = NO_FILTERS;
    expect(matchesFilters(asking, { ...f, status: ['running', 'queued'] })).toBe(true);
    expect(matchesFilters(asking, { ...f, status: ['failed'] })).toBe(false);
    expect(matchesFilters(paused, { ...f, control: ['paused'] })).toBe(true);
    expect(matchesFilters(asking, { ...f, control: ['paused'] })).toBe(false);
    expect(matchesFilters(asking, { ...f, needsOperator: true })).toBe(true);
    expect(matchesFilters(paused, { ...f, needsOperator: true })).toBe(false);
    expect(matchesFilters(paused, { ...f, needsOperator: false })).toBe(true);
    expect(matchesFilters(asking, { ...f, share: 'web' })).toBe(true);
    expect(matchesFilters(asking, { ...f, share: 'tmate' })).toBe(false);
    // A share still starting is not live.
    expect(matchesFilters(paused, { ...f, share: 'any' })).toBe(false);
    expect(matchesFilters(paused, { ...f, share: 'none' })).toBe(true);
    expect(matchesFilters(asking, { ...f, share: 'web', q: 'nothing' })).toBe(false);
  });

  it('query parameters leave out what is unset', () => {
    expect(filterParams(NO_FILTERS)).toEqual({});
    expect(filterParams({ q: ' x ', status: ['running', 'assigned'], control: ['operator'], needsOperator: false, share: 'none' })).toEqual({
      q: 'x', status: 'running,assigned', control: 'operator', needsOperator: 'false', share: 'none',
    });
  });

  it('runs asking for an operator come first, the longest waiting on top; the rest keep their order', () => {
    const list = [run('new'), run('late-ask', { needsOperator: { reason: 'r', at: '2026-01-01T00:05:00Z' } }), run('old'), run('early-ask', { needsOperator: { reason: 'r', at: '2026-01-01T00:01:00Z' } })];
    expect(attentionFirst(list).map((r) => r.id)).toEqual(['early-ask', 'late-ask', 'new', 'old']);
  });

  it('share tone: live, grace (warned, or within 5 minutes), starting, expired', () => {
    const now = new Date('2026-01-01T00:30:00Z').getTime();
    expect(shareTone(session('web', 'READY'), now)).toBe('live');
    expect(shareTone(session('web', 'READY', { graceWarnedAt: '2026-01-01T00:29:00Z' }), now)).toBe('grace');
    expect(shareTone(session('web', 'READY', { expiresAt: '2026-01-01T00:34:00Z' }), now)).toBe('grace');
    expect(shareTone(session('web', 'STARTING'), now)).toBe('starting');
    expect(shareTone(session('web', 'READY', { expiresAt: '2026-01-01T00:29:59Z' }), now)).toBe('expired');
  });
});

describe('the run list store: filters and the flagged set follow pushes', () => {
  it('a pushed run joins, updates or leaves the filtered list; the flagged set follows its flag whatever the filters', () => {
    const store = new RunsStore();
    store.filters = { ...NO_FILTERS, status: ['running'] };
    store.apply(run('a'));
    expect(store.runs.map((r) => r.id)).toEqual(['a']);
    store.apply(run('a', { revision: 2, status: 'succeeded' }));
    expect(store.runs).toEqual([]);
    store.apply(run('b', { status: 'queued' }));
    expect(store.runs).toEqual([]);
    // Asking for an operator: flagged (counted, notified) even though the filter hides it.
    store.apply(run('b', { revision: 2, status: 'queued', needsOperator: { reason: 'r', at: '2026-01-01T00:01:00Z' } }));
    expect(store.flagged.map((r) => r.id)).toEqual(['b']);
    expect(store.visible).toEqual([]);
    store.apply(run('b', { revision: 3, status: 'running', needsOperator: { reason: 'r', at: '2026-01-01T00:01:00Z' } }));
    expect(store.visible.map((r) => r.id)).toEqual(['b']);
    // An older push never brings the flag back.
    store.apply(run('b', { revision: 4, status: 'running' }));
    store.apply(run('b', { revision: 3, status: 'running', needsOperator: { reason: 'r', at: '2026-01-01T00:01:00Z' } }));
    expect(store.flagged).toEqual([]);
    expect(store.visible.map((r) => [r.id, r.revision])).toEqual([['b', 4]]);
  });
});

describe('notifications', () => {
  afterEach(() => {
    vi.unstubAllGlobals();
  });

  it('counts in the title, notifies new items only once, and not what already waited at load', async () => {
    const shown: string[] = [];
    class FakeNotification {
      static permission: NotificationPermission = 'default';
      static requestPermission = async () => (FakeNotification.permission = 'granted');
      onclick: (() => void) | null = null;
      constructor(title: string) {
        shown.push(title);
      }
      close() {}
    }
    // STAND-IN: node has no Notification; the browser's own is exercised in test/e2e/dashboard-fleet.test.ts.
    vi.stubGlobal('Notification', FakeNotification);
    const n = new Notifications();
    const asks = (id: string, at = '2026-01-01T00:00:00Z') => runAttention({ id, title: `run ${id}`, needsOperator: { reason: 'help', at } }, `#/runs/${id}`)!;
    n.update([], false);
    n.update([asks('old')], true); // waiting when the data loaded: counted, not notified
    await n.enable();
    expect(n.active).toBe(true);
    n.update([asks('old'), asks('new')], true);
    n.update([asks('old'), asks('new')], true); // a repeated push
    expect(shown).toEqual(['Needs an operator: run new']);
    // The same run asking again is a new occurrence.
    n.update([asks('old'), asks('new', '2026-01-01T00:09:00Z')], true);
    expect(shown).toEqual(['Needs an operator: run new', 'Needs an operator: run new']);
    expect(n.waiting).toHaveLength(2);
    n.disable();
    n.update([asks('third')], true);
    expect(shown).toHaveLength(2);
    expect(badgedTitle(0)).toBe('Handoff');
    expect(badgedTitle(3)).toBe('(3) Handoff');
  });

  it('an approval waits for me only if someone else asked and my role may decide it', () => {
    const approval = {
      id: 'ap', runId: null, action: 'session.create.external', params: {}, requester: { id: 'u1', name: 'alice', role: 'operator' },
      approverRoles: ['admin'], status: 'pending' as const, createdAt: '', expiresAt: '', resolvedAt: null, resolvedBy: null, resolvedByName: null, reason: null, outcome: null,
    };
    expect(approvalAttention(approval, { id: 'u2', role: 'admin' }, '#/approvals')?.key).toBe('approval:ap');
    expect(approvalAttention(approval, { id: 'u1', role: 'admin' }, '#/approvals')).toBeNull();
    expect(approvalAttention(approval, { id: 'u3', role: 'operator' }, '#/approvals')).toBeNull();
    expect(approvalAttention({ ...approval, status: 'approved' }, { id: 'u2', role: 'admin' }, '#/approvals')).toBeNull();
  });
});
