import { take, type Bucket, type BucketLimits } from '../domain/token-bucket.js';

/**
 * Per-key token buckets (per API token, per socket), in this node's memory: a flood
 * from one client is refused without touching the database or other clients.
 */
export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();

  constructor(
    private readonly limits: BucketLimits,
    private readonly clock: () => number = Date.now,
  ) {}

  /** 0 when allowed; otherwise the ms until the key may try again. */
  check(key: string): number {
    const r = take(this.buckets.get(key), this.limits, this.clock());
    this.buckets.set(key, r.bucket);
    if (this.buckets.size > 50_000) this.prune();
    return r.ok ? 0 : r.retryAfterMs;
  }

  forget(key: string): void {
    this.buckets.delete(key);
  }

  /** Full buckets carry no information: drop them. */
  private prune(): void {
    const now = this.clock();
    for (const [key, b] of this.buckets) {
      if (b.tokens + ((now - b.at) / 1000) * this.limits.perSecond >= this.limits.burst) this.buckets.delete(key);
    }
  }
}
