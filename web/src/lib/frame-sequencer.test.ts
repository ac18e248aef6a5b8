import type { Frame } from '@handoff/shared';
import { describe, expect, it } from 'vitest';
import { FrameSequencer, type SequencerStep } from './frame-sequencer.js';

const frame = (seq: number): Frame => ({ seq, t: seq * 10, data: `<${seq}>` });
const frames = (from: number, to: number): Frame[] => Array.from({ length: to - from + 1 }, (_, i) => frame(from + i));
const seqs = (step: SequencerStep): number[] => step.write.map((f) => f.seq);

describe('FrameSequencer', () => {
  it('writes the scrollback, then contiguous live frames', () => {
    const s = new FrameSequencer();
    expect(s.afterSeq).toBeUndefined();
    expect(seqs(s.snapshot(frames(1, 3)))).toEqual([1, 2, 3]);
    expect(s.afterSeq).toBe(3);
    expect(seqs(s.live([frame(4)]))).toEqual([4]);
    expect(seqs(s.live(frames(5, 6)))).toEqual([5, 6]);
    expect(s.lastSeq).toBe(6);
  });

  it('holds live frames that arrive before the scrollback and dedupes the overlap', () => {
    const s = new FrameSequencer();
    expect(s.live(frames(3, 5))).toEqual({ write: [], needsResync: false });
    const step = s.snapshot(frames(1, 4));
    expect(seqs(step)).toEqual([1, 2, 3, 4, 5]);
    expect(step.needsResync).toBe(false);
  });

  it('starts from the first frame of a truncated scrollback tail', () => {
    const s = new FrameSequencer();
    s.live(frames(58, 62));
    expect(seqs(s.snapshot(frames(50, 60)))).toEqual(frames(50, 62).map((f) => f.seq));
  });

  it('ignores frames at or below lastSeq and repeated frames', () => {
    const s = new FrameSequencer();
    s.snapshot(frames(1, 5));
    expect(seqs(s.live(frames(2, 5)))).toEqual([]);
    expect(seqs(s.live([frame(6), frame(6)]))).toEqual([6]);
    expect(seqs(s.snapshot(frames(1, 6)))).toEqual([]);
    expect(s.lastSeq).toBe(6);
  });

  it('asks for a resync on a gap and fills it from the answer', () => {
    const s = new FrameSequencer();
    s.snapshot(frames(1, 2));
    const gap = s.live(frames(5, 6));
    expect(gap).toEqual({ write: [], needsResync: true });
    expect(s.afterSeq).toBe(2);
    expect(s.live([frame(7)]).needsResync).toBe(true);
    const filled = s.snapshot(frames(3, 6));
    expect(seqs(filled)).toEqual([3, 4, 5, 6, 7]);
    expect(filled.needsResync).toBe(false);
  });

  it('keeps asking while the answer only partly fills the gap', () => {
    const s = new FrameSequencer();
    s.snapshot(frames(1, 2));
    s.live([frame(6)]);
    const partial = s.snapshot(frames(3, 4));
    expect(seqs(partial)).toEqual([3, 4]);
    expect(partial.needsResync).toBe(true);
    expect(seqs(s.snapshot([frame(5)]))).toEqual([5, 6]);
  });

  it('skips frames the server no longer holds', () => {
    const s = new FrameSequencer();
    s.snapshot(frames(1, 2));
    s.live([frame(9)]);
    const step = s.snapshot(frames(6, 8));
    expect(seqs(step)).toEqual([6, 7, 8, 9]);
    expect(step.needsResync).toBe(false);
  });

  it('resolves a gap the server cannot fill after a few empty answers', () => {
    const s = new FrameSequencer({ maxFailedResyncs: 3 });
    s.snapshot(frames(1, 2));
    s.live(frames(5, 6));
    expect(s.snapshot([]).needsResync).toBe(true);
    expect(s.snapshot([]).needsResync).toBe(true);
    const skipped = s.snapshot([]);
    expect(seqs(skipped)).toEqual([5, 6]);
    expect(skipped.needsResync).toBe(false);
  });

  it('does not stall forever when the first scrollback is empty', () => {
    const s = new FrameSequencer();
    s.live(frames(4, 5));
    const first = s.snapshot([]);
    expect(first).toEqual({ write: [], needsResync: true });
    expect(s.afterSeq).toBe(0);
    expect(seqs(s.snapshot(frames(1, 3)))).toEqual([1, 2, 3, 4, 5]);
  });

  it('skips a gap once too many frames wait behind it', () => {
    const s = new FrameSequencer({ maxBuffered: 3 });
    s.snapshot([frame(1)]);
    expect(s.live(frames(3, 5)).needsResync).toBe(true);
    const step = s.live([frame(6)]);
    expect(seqs(step)).toEqual([3, 4, 5, 6]);
    expect(step.needsResync).toBe(false);
  });

  it('resubscribes after a reconnect from where it stopped', () => {
    const s = new FrameSequencer();
    s.snapshot(frames(1, 4));
    s.live([frame(5)]);
    expect(s.afterSeq).toBe(5);
    // Frames 6-7 were pushed while offline; the resubscribe answer brings them back.
    expect(seqs(s.snapshot(frames(6, 8)))).toEqual([6, 7, 8]);
  });
});
