import { describe, expect, it } from 'vitest';
import { clock, delayMs, IDLE_LIMIT_S, outputUpTo, parseCast, timeAt } from './replay.js';

const cast = [
  JSON.stringify({ version: 2, width: 100, height: 30, timestamp: 1, env: { TERM: 'screen-256color', SHELL: '/bin/sh' } }),
  JSON.stringify([0.1, 'o', 'one\r\n']),
  JSON.stringify([0.5, 'o', 'two\r\n']),
  JSON.stringify([9.5, 'o', 'three\r\n']),
  '',
].join('\n');

describe('replay: the recording', () => {
  it('numbers output lines as frame seqs 1, 2, 3 and keeps the header', () => {
    const { header, frames } = parseCast(cast);
    expect(header).toMatchObject({ width: 100, height: 30, env: { TERM: 'screen-256color' } });
    expect(frames.map((f) => [f.seq, f.time])).toEqual([[1, 0.1], [2, 0.5], [3, 9.5]]);
    expect(outputUpTo(frames, 0)).toBe('');
    expect(outputUpTo(frames, 2)).toBe('one\r\ntwo\r\n');
    expect(timeAt(frames, 3)).toBe(9.5);
  });

  it('waits the recorded gap divided by the speed, long idles capped', () => {
    const { frames } = parseCast(cast);
    expect(delayMs(frames, 1, 1)).toBeCloseTo(400);
    expect(delayMs(frames, 1, 4)).toBeCloseTo(100);
    expect(delayMs(frames, 2, 1)).toBe(IDLE_LIMIT_S * 1000);
    expect(delayMs(frames, 3, 1)).toBe(0);
  });

  it('refuses what is not an asciicast v2 recording', () => {
    expect(() => parseCast('')).toThrow('empty');
    expect(() => parseCast('{"version":1,"width":80,"height":24}')).toThrow('asciicast v2');
  });

  it('formats the clock', () => {
    expect(clock(83.4)).toBe('1:23');
    expect(clock(3725)).toBe('1:02:05');
  });
});
