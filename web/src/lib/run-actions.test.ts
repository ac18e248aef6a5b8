import type { Run } from '@handoff/shared';
import { describe, expect, it } from 'vitest';
import { exitTone, primaryAction } from './run-actions.js';

const ME = 'me';

function run(over: Partial<Run> & { state?: Run['control']['state']; controllerId?: string | null } = {}): Run {
  const { state = 'agent', controllerId = null, ...rest } = over;
  return {
    id: 'r', revision: 1, title: 't', command: { script: 'true' }, cwd: null, env: {}, labels: {}, status: 'running',
    createdBy: 'u', createdByName: 'ursula', workerId: 'w', workerName: 'worker-1', exitCode: null, errorMessage: null,
    control: { state, seq: 1, appliedSeq: 1, mode: state === 'paused' ? 'soft' : null, controllerId, by: null },
    writeGrants: [], needsOperator: null, liveSessionEnabled: true,
    createdAt: '2026-01-01T00:00:00Z', assignedAt: null, startedAt: null, endedAt: null, sessions: [],
    ...rest,
  };
}

describe('primaryAction: the button that makes sense in the current state', () => {
  it.each([
    ['running, agent drives', run(), 'pause'],
    ['paused', run({ state: 'paused' }), 'resume'],
    ['taken over by me', run({ state: 'operator', controllerId: ME }), 'handback'],
    ['taken over by someone else', run({ state: 'operator', controllerId: 'other' }), null],
    ['queued', run({ status: 'queued' }), null],
    ['cancelled while paused', run({ status: 'cancelled', state: 'paused' }), 'replay'],
    ['succeeded', run({ status: 'succeeded', exitCode: 0 }), 'replay'],
  ] as const)('%s → %s', (_, r, want) => {
    expect(primaryAction(r, ME, true)).toBe(want);
  });

  it('an observer gets no control action as primary, only the replay of a finished run', () => {
    expect(primaryAction(run(), ME, false)).toBeNull();
    expect(primaryAction(run({ state: 'paused' }), ME, false)).toBeNull();
    expect(primaryAction(run({ status: 'failed', exitCode: 1 }), ME, false)).toBe('replay');
  });
});

describe('exitTone: a cancelled run is not a crash', () => {
  it.each([
    [run({ status: 'cancelled', exitCode: 143 }), 'neutral'],
    [run({ status: 'failed', exitCode: 2 }), 'bad'],
    [run({ status: 'succeeded', exitCode: 0 }), 'ok'],
    [run({ status: 'lost' }), 'neutral'],
  ] as const)('%#', (r, want) => expect(exitTone(r)).toBe(want));
});
