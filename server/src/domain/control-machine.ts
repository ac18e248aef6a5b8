import type { ControlState } from '@handoff/shared';
import { transition, type TransitionTable } from './transition-table.js';

export const ControlEvent = { pause: 'pause', resume: 'resume', takeover: 'takeover', handback: 'handback' } as const;
export type ControlEvent = (typeof ControlEvent)[keyof typeof ControlEvent];

/** Who drives a run (DESIGN.md §2 Run): agent ⇄ paused, agent|paused → operator → agent. */
export const controlTable: TransitionTable<ControlState, ControlEvent> = {
  agent: { pause: 'paused', takeover: 'operator' },
  paused: { resume: 'agent', takeover: 'operator' },
  operator: { handback: 'agent' },
};

export function controlTransition(state: ControlState, event: ControlEvent): ControlState {
  return transition('control', controlTable, state, event);
}
