import { describe, expect, it } from 'vitest';
import { ManualClock, systemClock, type Clock } from '@handoff/shared';
import { pino } from 'pino';
import { Sweeper } from './sweeper.js';
import type { Leadership } from '../infra/leader.js';

/** A lease check that takes as long as the test says: stands in for a slow sweep. */
function slowLeadership() {
  const pending: Array<() => void> = [];
  const leadership: Leadership & { calls: number } = {
    calls: 0,
    isLeader() {
      leadership.calls++;
      // Not leader: the sweep ends right after the check, so nothing else is needed.
      return new Promise<boolean>((resolve) => pending.push(() => resolve(false)));
    },
    release: async () => {},
  };
  return { leadership, finishOne: () => pending.shift()?.() };
}

function sweeper(leadership: Leadership, clock: Clock = systemClock): Sweeper {
  // The sweep steps are never reached (never leader), so their dependencies stay unused.
  const unused = null as never;
  return new Sweeper(unused, unused, unused, unused, leadership, pino({ level: 'silent' }), clock, { intervalMs: 100, graceMs: 0, startTimeoutMs: 0, workerLostAfterMs: 0, reclaimGraceMs: 60_000 });
}

describe('sweeper ticks', () => {
  const settle = () => new Promise((r) => setImmediate(r));

  it('skips timer ticks while a sweep runs instead of queueing them (on the injected clock)', async () => {
    const clock = new ManualClock();
    const { leadership, finishOne } = slowLeadership();
    const s = sweeper(leadership, clock);
    s.start();
    for (let i = 0; i < 10; i++) {
      clock.advance(100); // ten ticks during one slow sweep
      await settle();
    }
    expect(leadership.calls).toBe(1);
    finishOne();
    await settle();
    clock.advance(100);
    await settle();
    expect(leadership.calls).toBe(2); // the next tick after it ended starts one sweep
    finishOne();
    await s.stop();
    expect(clock.pending).toBe(0); // stop() cancels the clock's timer
  });

  it('explicit ticks during a sweep share one sweep queued after it', async () => {
    const { leadership, finishOne } = slowLeadership();
    const s = sweeper(leadership);
    const first = s.tick();
    const a = s.tick();
    const b = s.tick();
    expect(a).toBe(b);
    finishOne();
    await first;
    await new Promise((r) => setImmediate(r));
    expect(leadership.calls).toBe(2);
    finishOne();
    await Promise.all([a, b]);
    expect(leadership.calls).toBe(2);
  });
});
