import type { ManualClock } from '@handoff/shared';

/**
 * Moves a hub's ManualClock forward by `ms`, `step` ms at a time, yielding to the event loop
 * after each step: every timer due on the way fires (a sweep each sweep interval), as it
 * would in real time, instead of one jump that fires each timer once.
 */
export async function stepClock(clock: ManualClock, ms: number, step: number): Promise<void> {
  for (let left = ms; left > 0; left -= step) {
    clock.advance(Math.min(step, left));
    await new Promise((r) => setImmediate(r));
  }
}
