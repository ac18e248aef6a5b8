import type { RunStatus } from '@handoff/shared';
import { statesAllowing, transition, type TransitionTable } from './transition-table.js';

export const RunEvent = {
  assign: 'assign',
  /** The worker refused or never acked the assignment: back to the queue. */
  unassign: 'unassign',
  start: 'start',
  succeed: 'succeed',
  fail: 'fail',
  cancel: 'cancel',
  /** The worker vanished (or restarted without it). */
  lose: 'lose',
} as const;
export type RunEvent = (typeof RunEvent)[keyof typeof RunEvent];

export const runTable: TransitionTable<RunStatus, RunEvent> = {
  queued: { assign: 'assigned', cancel: 'cancelled' },
  assigned: { unassign: 'queued', start: 'running', succeed: 'succeeded', fail: 'failed', cancel: 'cancelled', lose: 'lost' },
  running: { succeed: 'succeeded', fail: 'failed', cancel: 'cancelled', lose: 'lost' },
  succeeded: {},
  failed: {},
  cancelled: {},
  lost: {},
};

export function runTransition(state: RunStatus, event: RunEvent): RunStatus {
  return transition('run', runTable, state, event);
}

export function runStatesAllowing(event: RunEvent): RunStatus[] {
  return statesAllowing(runTable, event);
}

/** The terminal event for a process exit: 0 succeeds, anything else (or no code) fails. */
export function exitEvent(exitCode: number | null): RunEvent {
  return exitCode === 0 ? RunEvent.succeed : RunEvent.fail;
}
