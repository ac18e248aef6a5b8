import type { LiveSession, Run } from '@handoff/shared';
import { describe, expect, it } from 'vitest';
import { isNewer, newestById } from './revisions.js';
import type { HubConnection } from './hub.svelte.js';
import { RunDetail } from './run-detail.svelte.js';
import { RunsStore } from './runs.svelte.js';

const RUN_ID = '01900000-0000-7000-8000-000000000009';

function session(revision: number, status: LiveSession['status']): LiveSession {
  return {
    id: 's1', revision, runId: RUN_ID, provider: 'web', status, workerId: 'w', correlationId: 'c',
    createdAt: '2026-01-01T00:00:00Z', readyAt: null, endedAt: null, expiresAt: '2026-01-01T01:00:00Z',
    graceWarnedAt: null, lastHeartbeatAt: null, endReason: null, errorMessage: null, attachRo: null,
  };
}

function run(revision: number, over: Partial<Run> = {}): Run {
  return {
    id: RUN_ID, revision, title: 't', command: { script: 'true' }, cwd: null, env: {}, labels: {}, status: 'running',
    createdBy: 'u', createdByName: 'ursula', workerId: 'w', workerName: 'worker-1', exitCode: null, errorMessage: null,
    control: { state: 'agent', seq: 0, appliedSeq: 0, mode: null, controllerId: null, by: null },
    writeGrants: [], needsOperator: null, liveSessionEnabled: true,
    createdAt: '2026-01-01T00:00:00Z', assignedAt: null, startedAt: null, endedAt: null, sessions: [],
    ...over,
  };
}

describe('revisions: a push never takes the screen back in time', () => {
  it('isNewer / newestById compare revisions per id', () => {
    expect(isNewer({ id: 'a', revision: 2 }, { id: 'a', revision: 1 })).toBe(true);
    expect(isNewer({ id: 'a', revision: 1 }, { id: 'a', revision: 1 })).toBe(false);
    expect(isNewer({ id: 'a', revision: 1 }, undefined)).toBe(true);
    expect(newestById([{ id: 'a', revision: 1 }, { id: 'b', revision: 5 }], [{ id: 'a', revision: 3 }, { id: 'b', revision: 4 }])).toEqual([
      { id: 'a', revision: 3 },
      { id: 'b', revision: 5 },
    ]);
  });

  it('the run page ignores an older run (a paused run never shows running again) and an older session', () => {
    const detail = new RunDetail(RUN_ID);
    detail.accept(run(5, { control: { state: 'paused', seq: 1, appliedSeq: 1, mode: 'hard', controllerId: null, by: null } }));
    // Overtaken on the wire: the revision before the pause.
    detail.accept(run(4));
    expect(detail.run?.control.state).toBe('paused');
    // Pushes arrive through the hub connection: a stand-in that records the handlers.
    const handlers = new Map<string, (payload: unknown) => void>();
    const fakeHub = { connected: false, on: (e: string, h: (p: unknown) => void) => (handlers.set(e, h), () => undefined), whileConnected: () => () => undefined };
    detail.follow(fakeHub as unknown as HubConnection);
    detail.accept(run(6, { sessions: [session(2, 'READY')] }));
    handlers.get('session:updated')!(session(1, 'STARTING')); // overtaken on the wire
    expect(detail.run?.sessions.map((s) => [s.revision, s.status])).toEqual([[2, 'READY']]);
    handlers.get('session:updated')!(session(3, 'REVOKED'));
    expect(detail.run?.sessions.map((s) => [s.revision, s.status])).toEqual([[3, 'REVOKED']]);
    handlers.get('run:updated')!(run(5)); // an older run push changes nothing
    expect(detail.run?.revision).toBe(6);
    // A newer run whose session copy is older than what is shown keeps the newer session.
    detail.accept(run(7, { sessions: [session(2, 'READY')] }));
    expect(detail.run?.revision).toBe(7);
    expect(detail.run?.sessions.map((s) => [s.revision, s.status])).toEqual([[3, 'REVOKED']]);
  });

  it('the run list ignores an older revision of a run it shows', () => {
    const store = new RunsStore();
    store.apply(run(3, { status: 'succeeded' }));
    store.apply(run(2, { status: 'running' }));
    expect(store.runs.map((r) => [r.revision, r.status])).toEqual([[3, 'succeeded']]);
    store.apply(run(4, { status: 'succeeded', exitCode: 0 }));
    expect(store.runs[0]?.revision).toBe(4);
  });
});
