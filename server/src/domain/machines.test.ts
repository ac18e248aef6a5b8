import { describe, expect, it } from 'vitest';
import { RunStatus, SessionStatus } from '@handoff/shared';
import { RunEvent, runTable, runTransition } from './run-machine.js';
import { SessionEvent, sessionTable, sessionTransition } from './live-session-machine.js';
import { roleAtLeast } from './roles.js';
import { ControlEvent, controlTransition } from './control-machine.js';
import { GrantEvent, grantStatesAllowing, grantTransition } from './write-grant-machine.js';

// Exhaustive: every (state, event) pair is either in the table or a STATE_CONFLICT.
describe('run machine', () => {
  const expected: Record<string, string> = {
    'queued/assign': 'assigned', 'queued/cancel': 'cancelled',
    'assigned/unassign': 'queued', 'assigned/start': 'running', 'assigned/succeed': 'succeeded',
    'assigned/fail': 'failed', 'assigned/cancel': 'cancelled', 'assigned/lose': 'lost',
    'running/succeed': 'succeeded', 'running/fail': 'failed', 'running/cancel': 'cancelled', 'running/lose': 'lost',
  };
  for (const state of Object.values(RunStatus)) {
    for (const event of Object.values(RunEvent)) {
      const key = `${state}/${event}`;
      it(key, () => {
        if (expected[key]) expect(runTransition(state, event)).toBe(expected[key]);
        else expect(() => runTransition(state, event)).toThrow(expect.objectContaining({ code: 'STATE_CONFLICT' }));
      });
    }
  }
  it('finished states are final', () => {
    for (const s of ['succeeded', 'failed', 'cancelled', 'lost'] as const) expect(runTable[s]).toEqual({});
  });
});

describe('live session machine', () => {
  const expected: Record<string, string> = {
    'DISABLED/start': 'STARTING',
    'STARTING/ready': 'READY', 'STARTING/revoke': 'REVOKED', 'STARTING/end': 'ENDED', 'STARTING/fail': 'ERROR',
    'READY/revoke': 'REVOKED', 'READY/end': 'ENDED', 'READY/fail': 'ERROR',
  };
  for (const state of Object.values(SessionStatus)) {
    for (const event of Object.values(SessionEvent)) {
      const key = `${state}/${event}`;
      it(key, () => {
        if (expected[key]) expect(sessionTransition(state, event)).toBe(expected[key]);
        else expect(() => sessionTransition(state, event)).toThrow(expect.objectContaining({ code: 'STATE_CONFLICT' }));
      });
    }
  }
  it('a revoked session is never overwritten by a later end', () => {
    expect(sessionTable.REVOKED).toEqual({});
  });
});

describe('roles', () => {
  it('orders observer < operator < admin', () => {
    expect(roleAtLeast('observer', 'operator')).toBe(false);
    expect(roleAtLeast('operator', 'operator')).toBe(true);
    expect(roleAtLeast('admin', 'operator')).toBe(true);
    expect(roleAtLeast('operator', 'admin')).toBe(false);
  });
});

describe('control machine', () => {
  const expected: Record<string, string> = {
    'agent/pause': 'paused', 'agent/takeover': 'operator',
    'paused/resume': 'agent', 'paused/takeover': 'operator',
    'operator/handback': 'agent',
  };
  for (const state of ['agent', 'paused', 'operator'] as const) {
    for (const event of Object.values(ControlEvent)) {
      const key = `${state}/${event}`;
      it(key, () => {
        if (expected[key]) expect(controlTransition(state, event)).toBe(expected[key]);
        else expect(() => controlTransition(state, event)).toThrow(expect.objectContaining({ code: 'STATE_CONFLICT' }));
      });
    }
  }
});

describe('write grant machine', () => {
  const expected: Record<string, string> = { 'active/revoke': 'revoked', 'active/expire': 'expired' };
  for (const state of ['active', 'revoked', 'expired'] as const) {
    for (const event of Object.values(GrantEvent)) {
      const key = `${state}/${event}`;
      it(key, () => {
        if (expected[key]) expect(grantTransition(state, event)).toBe(expected[key]);
        else expect(() => grantTransition(state, event)).toThrow(expect.objectContaining({ code: 'STATE_CONFLICT' }));
      });
    }
  }
  it('only a live grant can end, so a revoke and an expiry never both apply', () => {
    expect(grantStatesAllowing(GrantEvent.revoke)).toEqual(['active']);
    expect(grantStatesAllowing(GrantEvent.expire)).toEqual(['active']);
  });
});
