import type { SessionStatus } from '@handoff/shared';
import { statesAllowing, transition, type TransitionTable } from './transition-table.js';

export const SessionEvent = {
  start: 'start',
  ready: 'ready',
  revoke: 'revoke',
  /** Normal end: run finished, TTL reached, provider switched. */
  end: 'end',
  fail: 'fail',
} as const;
export type SessionEvent = (typeof SessionEvent)[keyof typeof SessionEvent];

/** DISABLED → STARTING → READY → REVOKED | ENDED | ERROR (DESIGN.md §2 Live session). */
export const sessionTable: TransitionTable<SessionStatus, SessionEvent> = {
  DISABLED: { start: 'STARTING' },
  STARTING: { ready: 'READY', revoke: 'REVOKED', end: 'ENDED', fail: 'ERROR' },
  READY: { revoke: 'REVOKED', end: 'ENDED', fail: 'ERROR' },
  REVOKED: {},
  ENDED: {},
  ERROR: {},
};

export function sessionTransition(state: SessionStatus, event: SessionEvent): SessionStatus {
  return transition('live session', sessionTable, state, event);
}

export function sessionStatesAllowing(event: SessionEvent): SessionStatus[] {
  return statesAllowing(sessionTable, event);
}
