import type { ManualClock } from '@handoff/shared';

/**
 * Moves a hub's ManualClock forward by `ms`, `step` ms at a time, yielding to the event loop
 * after each step: every timer due on the way fires (a sweep each sweep interval), as it
 * would in real time, instead of one jump that fires each timer once.
 */
async function stepClock(clock: ManualClock, ms: number, step: number): Promise<void> {
  for (let left = ms; left > 0; left -= step) {
    clock.advance(Math.min(step, left));
    await new Promise((r) => setImmediate(r));
  }
}

/**
 * stepClock, then one sweep judging at the clock's new time. A timer tick that finds a sweep
 * still running is skipped (as it should be), and the steps above follow each other faster
 * than a sweep's queries: without this, which clock time the last sweep saw depends on how
 * the event loop raced the database. In real time the next tick would come 500 ms later.
 */
export async function advanceAndSweep(clock: ManualClock, ms: number, step: number, hub: { sweeper: { tick(): Promise<void> } }): Promise<void> {
  await stepClock(clock, ms, step);
  await hub.sweeper.tick();
}
