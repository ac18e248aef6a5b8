import { describe, expect, it } from 'vitest';
import { ManualClock } from './clock.js';

describe('ManualClock', () => {
  it('fires timers in time order as it advances, intervals repeatedly', () => {
    const clock = new ManualClock(1_000);
    const fired: string[] = [];
    clock.setTimeout(() => fired.push(`b@${clock.now()}`), 200);
    clock.setTimeout(() => fired.push(`a@${clock.now()}`), 100);
    const every = clock.setInterval(() => fired.push(`i@${clock.now()}`), 150);
    clock.advance(310);
    expect(fired).toEqual(['a@1100', 'i@1150', 'b@1200', 'i@1300']);
    expect(clock.now()).toBe(1_310);
    every.cancel();
    clock.advance(1_000);
    expect(fired).toHaveLength(4);
    expect(clock.pending).toBe(0);
  });

  it('does not fire a cancelled timeout and never goes back in time', () => {
    const clock = new ManualClock(new Date('2026-01-01T00:00:00Z'));
    let ran = false;
    clock.setTimeout(() => (ran = true), 50).cancel();
    clock.advance(100);
    clock.set(0);
    expect(ran).toBe(false);
    expect(clock.date().toISOString()).toBe('2026-01-01T00:00:00.100Z');
  });
});
