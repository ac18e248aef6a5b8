import type { GrantStatus } from '@handoff/shared';
import { statesAllowing, transition, type TransitionTable } from './transition-table.js';

export const GrantEvent = {
  /** Ended early: revoke-write, hand-back, its session or run ended. */
  revoke: 'revoke',
  /** Its TTL ran out. */
  expire: 'expire',
} as const;
export type GrantEvent = (typeof GrantEvent)[keyof typeof GrantEvent];

/** active → revoked | expired (DESIGN.md §2 Attach data and write grants). Renewal keeps it active. */
export const grantTable: TransitionTable<GrantStatus, GrantEvent> = {
  active: { revoke: 'revoked', expire: 'expired' },
  revoked: {},
  expired: {},
};

export function grantTransition(state: GrantStatus, event: GrantEvent): GrantStatus {
  return transition('write grant', grantTable, state, event);
}

export function grantStatesAllowing(event: GrantEvent): GrantStatus[] {
  return statesAllowing(grantTable, event);
}
