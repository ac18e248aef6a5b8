import { afterEach, describe, expect, it, vi } from 'vitest';
import { pino } from 'pino';
import { Sweeper } from './sweeper.js';
import type { Leadership } from './leader.js';

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

function sweeper(leadership: Leadership): Sweeper {
  // The sweep steps are never reached (never leader), so their dependencies stay unused.
  const unused = null as never;
  return new Sweeper(unused, unused, unused, unused, leadership, pino({ level: 'silent' }), { intervalMs: 100, graceMs: 0, startTimeoutMs: 0, workerLostAfterMs: 0, reclaimGraceMs: 60_000 });
}

describe('sweeper ticks', () => {
  afterEach(() => vi.useRealTimers());

  it('skips timer ticks while a sweep runs instead of queueing them', async () => {
    vi.useFakeTimers();
    const { leadership, finishOne } = slowLeadership();
    const s = sweeper(leadership);
    s.start();
    await vi.advanceTimersByTimeAsync(1000); // ten ticks during one slow sweep
    expect(leadership.calls).toBe(1);
    finishOne();
    await vi.advanceTimersByTimeAsync(100);
    expect(leadership.calls).toBe(2); // the next tick after it ended starts one sweep
    finishOne();
    const stopped = s.stop();
    await vi.advanceTimersByTimeAsync(0);
    await stopped;
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
