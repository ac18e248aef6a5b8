import { describe, expect, it } from 'vitest';
import { take, type Bucket } from './token-bucket.js';

describe('token bucket', () => {
  const limits = { perSecond: 10, burst: 3 };
  it('allows a burst, then refuses with the time until the next token', () => {
    let b: Bucket | undefined;
    const results = [];
    for (let i = 0; i < 4; i++) {
      const r = take(b, limits, 1000);
      b = r.bucket;
      results.push(r);
    }
    expect(results.map((r) => r.ok)).toEqual([true, true, true, false]);
    expect(results[3]!.retryAfterMs).toBe(100);
  });
  it('refills with time, never above the burst', () => {
    let b = take(undefined, limits, 0).bucket;
    b = take(b, limits, 0).bucket;
    b = take(b, limits, 0).bucket; // empty
    expect(take(b, limits, 50).ok).toBe(false);
    expect(take(b, limits, 100).ok).toBe(true);
    expect(take(b, limits, 60_000).bucket.tokens).toBe(2); // refilled to 3, took 1
  });
});
