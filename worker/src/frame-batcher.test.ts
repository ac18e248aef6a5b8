import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { Frame } from '@handoff/shared';
import { FrameBatcher, type FrameBatcherOptions } from './frame-batcher.js';

const START = 1_000_000;

function batcher(opts: Partial<FrameBatcherOptions> = {}) {
  const frames: Frame[] = [];
  const drops: number[] = [];
  const b = new FrameBatcher({
    flushMs: 16,
    startedAt: START,
    onFrame: (f) => frames.push(f),
    onDrop: (d) => drops.push(d.chars),
    ...opts,
  });
  return { b, frames, drops };
}

const text = (frames: readonly Frame[]) => frames.map((f) => f.data).join('');

describe('FrameBatcher', () => {
  beforeEach(() => {
    vi.useFakeTimers();
    vi.setSystemTime(START);
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('seals one frame flushMs after the first output, t relative to the run start', () => {
    const { b, frames } = batcher();
    vi.advanceTimersByTime(5);
    b.push('hel');
    vi.advanceTimersByTime(10);
    b.push('lo');
    vi.advanceTimersByTime(5);
    expect(frames).toEqual([]);
    vi.advanceTimersByTime(1); // 16 ms after the first push, not after the last
    expect(frames).toEqual([{ seq: 1, t: 5, data: 'hello' }]);
    b.push('!');
    vi.advanceTimersByTime(16);
    expect(frames.map((f) => f.seq)).toEqual([1, 2]);
    expect(frames[1]).toEqual({ seq: 2, t: 21, data: '!' });
  });

  it('seals at once when maxFrameChars wait, splitting big output without breaking surrogate pairs', () => {
    const { b, frames } = batcher({ maxFrameChars: 4 });
    b.push('ab');
    expect(frames).toEqual([]);
    b.push('c😀def'); // 😀 is two UTF-16 units, at index 3–4 of the pending output
    expect(frames.map((f) => f.data)).toEqual(['abc', '😀de', 'f']);
    expect(frames.map((f) => f.seq)).toEqual([1, 2, 3]);
  });

  it('uses 32 KiB frames by default', () => {
    const { b, frames } = batcher();
    b.push('x'.repeat(32 * 1024 - 1));
    expect(frames).toEqual([]);
    b.push('x'.repeat(38 * 1024 + 1));
    expect(frames.map((f) => f.data.length)).toEqual([32 * 1024, 32 * 1024, 6 * 1024]);
  });

  it('keeps frames until acknowledged and returns the rest in order', () => {
    const { b } = batcher();
    for (const s of ['a', 'b', 'c', 'd']) {
      b.push(s);
      b.flush();
    }
    expect(b.unacked().map((f) => f.seq)).toEqual([1, 2, 3, 4]);
    b.ack(2);
    expect(b.unacked().map((f) => f.data)).toEqual(['c', 'd']);
    expect(b.ackedSeq).toBe(2);
    b.ack(1); // a stale ack changes nothing
    expect(b.unacked().map((f) => f.seq)).toEqual([3, 4]);
    b.ack(4);
    expect(b.hasUnacked).toBe(false);
  });

  it('holds output while not live and seals it, in order, on going live', () => {
    const { b, frames } = batcher({ live: false });
    b.push('one ');
    vi.advanceTimersByTime(100);
    b.push('two');
    vi.advanceTimersByTime(100);
    expect(frames).toEqual([]);
    expect(b.hasPending).toBe(true);
    b.setLive(true);
    expect(frames).toEqual([{ seq: 1, t: 0, data: 'one two' }]);
    b.setLive(false);
    b.push('three');
    b.flush(); // ignored while not live
    expect(frames).toHaveLength(1);
    b.setLive(true);
    expect(frames.map((f) => [f.seq, f.data])).toEqual([
      [1, 'one two'],
      [2, 'three'],
    ]);
  });

  it('bounds memory during an outage: drops the oldest waiting output and says so', () => {
    const { b, frames, drops } = batcher({ live: false, maxUnackedChars: 1000 });
    for (let i = 0; i < 50; i += 1) b.push(`${String(i).padStart(3, '0')}:${'.'.repeat(96)}\n`); // 50 × 101 chars
    b.setLive(true);
    const all = text(frames);
    expect(drops).toEqual([50 * 101 - 1000]);
    expect(all).toContain(`[handoff: ${50 * 101 - 1000} characters of output were dropped while the hub was unreachable]`);
    expect(all.endsWith(`049:${'.'.repeat(96)}\n`)).toBe(true);
    expect(all).not.toContain('000:');
    expect(frames.map((f) => f.seq)).toEqual(frames.map((_, i) => i + 1));
  });

  it('never drops numbered frames (the hub needs a gapless seq): past the cap new output is dropped instead', () => {
    const { b, frames, drops } = batcher({ maxFrameChars: 100, maxUnackedChars: 450 });
    for (let i = 0; i < 3; i += 1) b.push('x'.repeat(100)); // 3 frames: 3 × (100 + 64 overhead) > 450
    b.push('y'.repeat(50));
    vi.advanceTimersByTime(100);
    expect(frames.map((f) => f.seq)).toEqual([1, 2, 3]);
    expect(b.unacked()).toHaveLength(3);
    b.ack(3);
    b.push('z');
    vi.advanceTimersByTime(16);
    expect(frames.map((f) => f.seq)).toEqual([1, 2, 3, 4]);
    expect(drops).toEqual([50]);
    expect(frames[3]!.data).toMatch(/\[handoff: 50 characters of output were dropped while the hub was unreachable\]\r\nz$/);
  });

  it('flush() seals at once; dispose() stops the timer', () => {
    const { b, frames } = batcher();
    b.push('now');
    b.flush();
    expect(frames).toEqual([{ seq: 1, t: 0, data: 'now' }]);
    b.push('never');
    b.dispose();
    vi.advanceTimersByTime(1000);
    expect(frames).toHaveLength(1);
  });

  it('goes on after frames sealed before (a re-adopted run): numbering continues, unacked ones are kept', () => {
    const earlier = [{ seq: 4, t: 10, data: 'd' }, { seq: 5, t: 11, data: 'e' }];
    const { b, frames } = batcher({ initialSeq: 5, initialFrames: earlier });
    expect(b.lastSeq).toBe(5);
    expect(b.ackedSeq).toBe(3);
    expect(b.unacked()).toEqual(earlier);
    b.ack(4);
    b.push('f');
    vi.advanceTimersByTime(16);
    expect(frames).toEqual([{ seq: 6, t: 0, data: 'f' }]);
    expect(b.unacked().map((f) => f.seq)).toEqual([5, 6]);
    const fresh = batcher({ initialSeq: 9 });
    expect([fresh.b.lastSeq, fresh.b.ackedSeq, fresh.b.hasUnacked]).toEqual([9, 9, false]);
  });

  it('tells with each frame how much pushed output it completes, dropped output counted and the notice not', () => {
    const through: number[] = [];
    const { b, frames } = batcher({ maxFrameChars: 100, maxUnackedChars: 1000, live: false, onFrame: (f, n) => (frames.push(f), through.push(n)) });
    for (let i = 0; i < 30; i += 1) b.push('x'.repeat(50));
    b.setLive(true); // 500 characters were dropped (their notice is in the first frame), 1000 wait
    expect(through[through.length - 1]).toBe(1500);
    const pushedPerFrame = frames.map((f, i) => f.data.replace(/\r\n\x1b\[0m\[handoff: .*\]\r\n/, '').length + (i === 0 ? 500 : 0));
    expect(through).toEqual(pushedPerFrame.map((_, i) => pushedPerFrame.slice(0, i + 1).reduce((a, c) => a + c, 0)));
  });
});
