import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';

/** Who may run cluster-wide chores (the sweeper) right now. */
export interface Leadership {
  /** True while this node holds the lease; renews it as a side effect. */
  isLeader(): Promise<boolean>;
  release(): Promise<void>;
}

/** Without Redis there is one node: it always leads. */
export const soleLeader: Leadership = { isLeader: async () => true, release: async () => {} };

// Renew only if we still own the key; release only our own lease.
const RENEW = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end`;
const RELEASE = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end`;

/**
 * A Redis lease (`SET key id NX PX ttl`): one leader at a time; a dead leader's lease
 * lapses after `ttlMs` and another node takes over. Conditional updates in the sweeper
 * keep a brief overlap harmless.
 *
 * When Redis fails, the answer is "not leader" (never a rejection): nobody can prove it
 * holds the lease, so nobody sweeps until Redis is back; `onError` reports the failure.
 */
export function redisLeadership(redis: Redis, key: string, ttlMs: number, onError: (err: Error) => void = () => {}): Leadership {
  const id = randomUUID();
  return {
    async isLeader() {
      try {
        if ((await redis.eval(RENEW, 1, key, id, String(ttlMs))) === 1) return true;
        return (await redis.set(key, id, 'PX', ttlMs, 'NX')) === 'OK';
      } catch (err) {
        onError(err as Error);
        return false;
      }
    },
    async release() {
      // Best effort: an unreleased lease lapses after ttlMs anyway.
      await redis.eval(RELEASE, 1, key, id).catch((err: Error) => onError(err));
    },
  };
}
