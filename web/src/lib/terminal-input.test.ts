import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ApiError } from './api.js';
import { splitFrames, TerminalInput } from './terminal-input.js';

describe('splitFrames', () => {
  it('keeps short input whole and splits long input in order', () => {
    expect(splitFrames('')).toEqual([]);
    expect(splitFrames('ls\r')).toEqual(['ls\r']);
    const long = 'a'.repeat(4096 * 2 + 5);
    const frames = splitFrames(long);
    expect(frames.map((f) => f.length)).toEqual([4096, 4096, 5]);
    expect(frames.join('')).toBe(long);
  });

  it('never cuts a surrogate pair', () => {
    const frames = splitFrames('abc😀def', 4);
    expect(frames).toEqual(['abc', '😀de', 'f']);
    expect(frames.every((f) => f.length <= 4)).toBe(true);
  });
});

describe('TerminalInput', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  /** A fake hub: records frames; each ack is released by the test (or at once with `auto`). */
  function setup(opts: { auto?: boolean; allowed?: () => boolean } = {}) {
    const sent: string[] = [];
    const acks: Array<{ resolve: () => void; reject: (e: unknown) => void }> = [];
    const errors: ApiError[] = [];
    const input = new TerminalInput({
      send: (data) => {
        sent.push(data);
        if (opts.auto ?? true) return Promise.resolve();
        return new Promise<void>((resolve, reject) => acks.push({ resolve, reject }));
      },
      allowed: opts.allowed ?? (() => true),
      onError: (e) => errors.push(e),
      maxFrameChars: 8,
    });
    return { input, sent, acks, errors };
  }

  it('coalesces keystrokes typed within 10 ms into one frame', async () => {
    const { input, sent } = setup();
    for (const key of 'ls -l') input.push(key);
    input.push('\r');
    expect(sent).toEqual([]);
    await vi.advanceTimersByTimeAsync(10);
    expect(sent).toEqual(['ls -l\r']);
  });

  it('keeps one frame in flight; keys typed meanwhile follow in order, split to the frame limit', async () => {
    const { input, sent, acks } = setup({ auto: false });
    input.push('echo ');
    await vi.advanceTimersByTimeAsync(10);
    expect(sent).toEqual(['echo ']);
    input.push('0123456789');
    input.push('\r');
    await vi.advanceTimersByTimeAsync(50);
    expect(sent).toHaveLength(1); // waits for the ack
    acks.shift()!.resolve();
    await vi.advanceTimersByTimeAsync(0);
    expect(sent).toEqual(['echo ', '01234567']);
    acks.shift()!.resolve();
    await vi.advanceTimersByTimeAsync(0);
    expect(sent).toEqual(['echo ', '01234567', '89\r']);
  });

  it('sends nothing unless allowed, and stops at once when the grant ends', async () => {
    let allowed = false;
    const { input, sent, acks } = setup({ auto: false, allowed: () => allowed });
    input.push('nope');
    await vi.advanceTimersByTimeAsync(20);
    expect(sent).toEqual([]);

    allowed = true;
    input.push('a');
    await vi.advanceTimersByTimeAsync(10);
    input.push('b');
    allowed = false;
    acks.shift()!.resolve();
    await vi.advanceTimersByTimeAsync(20);
    expect(sent).toEqual(['a']);
  });

  it('a FORBIDDEN ack is reported and drops what was queued behind it', async () => {
    const { input, sent, acks, errors } = setup({ auto: false });
    input.push('x');
    await vi.advanceTimersByTimeAsync(10);
    input.push('y');
    acks.shift()!.reject(new ApiError('FORBIDDEN', 'you hold no write grant'));
    await vi.advanceTimersByTimeAsync(20);
    expect(errors.map((e) => e.code)).toEqual(['FORBIDDEN']);
    expect(sent).toEqual(['x']);
    input.push('z');
    await vi.advanceTimersByTimeAsync(10);
    expect(sent).toEqual(['x', 'z']);
  });

  it('a RATE_LIMITED frame is reported and retried after the wait the hub asked for, keeping order', async () => {
    const { input, sent, acks, errors } = setup({ auto: false });
    input.push('ab');
    await vi.advanceTimersByTimeAsync(10);
    input.push('c');
    acks.shift()!.reject(new ApiError('RATE_LIMITED', 'too many events; retry in 200 ms', 0, { retryAfterMs: 200 }));
    await vi.advanceTimersByTimeAsync(199);
    expect(sent).toEqual(['ab']);
    expect(errors.map((e) => e.code)).toEqual(['RATE_LIMITED']);
    await vi.advanceTimersByTimeAsync(1);
    expect(sent).toEqual(['ab', 'abc']);
  });
});
