import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { Frame } from '@handoff/shared';
import { FrameBatcher, type FrameBatcherOptions } from './frame-batcher.js';

const START = 1_000_000;

/** These tests are about batching: the first output is batched like the rest unless a test says otherwise. */
function batcher(opts: Partial<FrameBatcherOptions> = {}) {
  const frames: Frame[] = [];
  let rooms = 0;
  const b = new FrameBatcher({
    flushMs: 16,
    firstAtOnce: false,
    startedAt: START,
    onFrame: (f) => frames.push(f),
    onRoom: () => (rooms += 1),
    ...opts,
  });
  return { b, frames, rooms: () => rooms };
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

  it('by default seals a run\'s very first output at once, then batches what follows', () => {
    const { b, frames } = batcher({ firstAtOnce: undefined, idleFlushMs: 0 });
    vi.advanceTimersByTime(5);
    b.push('$ ');
    expect(frames).toEqual([{ seq: 1, t: 5, data: '$ ' }]);
    b.push('a');
    vi.advanceTimersByTime(3);
    b.push('b');
    expect(frames).toHaveLength(1); // the rest waits for its batch
    vi.advanceTimersByTime(13);
    expect(frames).toEqual([{ seq: 1, t: 5, data: '$ ' }, { seq: 2, t: 5, data: 'ab' }]);
  });

  it('seals one frame flushMs after the first output, t relative to the run start', () => {
    const { b, frames } = batcher({ idleFlushMs: 0 }); // the batch window alone
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

  it('keeps a stream of output batched up to flushMs: one timer, moved, not one per chunk', () => {
    const { b, frames } = batcher(); // idle flush after 2 ms
    const timers = vi.getTimerCount();
    for (let i = 0; i < 40; i++) {
      b.push(`line ${i}\n`);
      vi.advanceTimersByTime(1); // a chunk every ms: never idle for 2 ms
      expect(vi.getTimerCount()).toBeLessThanOrEqual(timers + 1);
    }
    // 40 ms of continuous output: frames sealed every 16 ms, not one per chunk.
    expect(frames.map((f) => f.t)).toEqual([0, 16]);
    expect(frames.map((f) => f.data.split('\n').length - 1)).toEqual([16, 16]);
    vi.advanceTimersByTime(1); // the stream stopped: the rest goes once it is idle for 2 ms
    expect(frames.map((f) => f.t)).toEqual([0, 16, 32]);
    expect(text(frames)).toBe(Array.from({ length: 40 }, (_, i) => `line ${i}\n`).join(''));
  });

  it('seals output that stops after idleFlushMs, without waiting for flushMs', () => {
    const { b, frames } = batcher({ idleFlushMs: 3 });
    b.push('$ ');
    vi.advanceTimersByTime(2);
    expect(frames).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(frames).toEqual([{ seq: 1, t: 0, data: '$ ' }]);
  });

  it('keeps bulk output batched even when it comes in bursts with idle gaps (only small output is sealed when idle)', () => {
    const { b, frames } = batcher({ idleFlushMs: 2, idleFlushMaxChars: 1024 });
    b.push('x'.repeat(4000)); // a burst read from the capture file…
    vi.advanceTimersByTime(5); // …then a gap under load
    expect(frames).toEqual([]);
    b.push('y'.repeat(4000));
    vi.advanceTimersByTime(11);
    expect(frames.map((f) => f.data.length)).toEqual([8000]); // one frame at 16 ms
  });

  it('seals the echo of a keystroke at once, once per keystroke; output long after the keystroke waits as usual', () => {
    const { b, frames } = batcher({ idleFlushMs: 0 });
    b.push('stream ');
    b.noteInput();
    vi.advanceTimersByTime(3);
    b.push('a'); // the echo: sealed with what waited before it, now
    expect(frames.map((f) => f.data)).toEqual(['stream a']);
    b.push('more'); // not an echo: batched
    expect(frames).toHaveLength(1);
    vi.advanceTimersByTime(16);
    expect(frames.map((f) => f.data)).toEqual(['stream a', 'more']);

    b.noteInput();
    vi.advanceTimersByTime(150); // past the echo window: whatever comes now is not the echo
    b.push('late');
    expect(frames).toHaveLength(2);
    vi.advanceTimersByTime(16);
    expect(frames.map((f) => f.data)).toEqual(['stream a', 'more', 'late']);
  });

  it('holds an echo back while the hub is unreachable (numbered only once live)', () => {
    const { b, frames } = batcher({ live: false });
    b.noteInput();
    b.push('a');
    expect(frames).toEqual([]);
    b.setLive(true);
    expect(frames.map((f) => f.data)).toEqual(['a']);
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

  it('never drops output: past roomChars it has no room until acks free some, then says so once', () => {
    const { b, frames, rooms } = batcher({ live: false, maxFrameChars: 100, roomChars: 1000 });
    let pushed = '';
    let i = 0;
    // The source pushes only while there is room (as the capture follower does).
    while (b.hasRoom()) {
      const line = `${String(i++).padStart(3, '0')}:${'.'.repeat(96)}\n`; // 101 chars
      pushed += line;
      b.push(line);
    }
    expect(pushed.length).toBe(1010); // 10 lines: the 10th crossed the bound
    expect(b.hasRoom()).toBe(false);
    b.setLive(true); // the hub is back: every line becomes a frame, none dropped
    expect(text(frames)).toBe(pushed);
    expect(b.hasRoom()).toBe(false); // unacknowledged frames still count (with their overhead)
    expect(rooms()).toBe(0);
    b.ack(frames[1]!.seq);
    expect(rooms()).toBe(0); // still over the bound
    b.ack(frames[frames.length - 1]!.seq);
    expect(rooms()).toBe(1);
    expect(b.hasRoom()).toBe(true);
    b.ack(frames[frames.length - 1]!.seq);
    expect(rooms()).toBe(1); // once per time it ran out of room
    expect(frames.map((f) => f.seq)).toEqual(frames.map((_, k) => k + 1));
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

  it('tells with each frame how much pushed output it completes', () => {
    const through: number[] = [];
    const { b, frames } = batcher({ maxFrameChars: 100, live: false, onFrame: (f, n) => (frames.push(f), through.push(n)) });
    for (let i = 0; i < 30; i += 1) b.push('x'.repeat(50));
    b.setLive(true);
    expect(frames.map((f) => f.data.length)).toEqual(Array(15).fill(100));
    expect(through).toEqual(frames.map((_, i) => (i + 1) * 100));
  });
});
