/** A token bucket: `burst` tokens, refilled at `perSecond`; time is passed in (pure). */
export interface Bucket {
  tokens: number;
  at: number;
}

export interface BucketLimits {
  perSecond: number;
  burst: number;
}

/**
 * Takes one token at `now` (ms). Returns the bucket's next state and, when empty, how
 * long until a token is available.
 */
export function take(bucket: Bucket | undefined, limits: BucketLimits, now: number): { bucket: Bucket; ok: boolean; retryAfterMs: number } {
  const prev = bucket ?? { tokens: limits.burst, at: now };
  const refilled = Math.min(limits.burst, prev.tokens + ((now - prev.at) / 1000) * limits.perSecond);
  if (refilled >= 1) return { bucket: { tokens: refilled - 1, at: now }, ok: true, retryAfterMs: 0 };
  return { bucket: { tokens: refilled, at: now }, ok: false, retryAfterMs: Math.ceil(((1 - refilled) / limits.perSecond) * 1000) };
}
