import type { Redis } from 'ioredis';
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes, RLWrapperTimeouts, type RateLimiterAbstract } from 'rate-limiter-flexible';

export interface RateLimitOptions {
  /** Requests per client IP per second, checked before anything is parsed. */
  ipPerSec: number;
  /** Failed authentications per client IP per minute; past it the IP is blocked. */
  authFailuresPerMin: number;
  /** First block of an IP over its failure budget, ms; each further block within an hour doubles it (max 1 h). */
  authBlockMs: number;
  /** REST requests per principal: sustained rate per second and burst (a window of burst / rate seconds). */
  restPerSec: number;
  restBurst: number;
}

/**
 * How long a Redis count may take before the in-memory insurance answers instead, ms: a
 * Redis that hangs (paused, overloaded) while still connected must not hang every request.
 */
const REDIS_TIMEOUT_MS = 200;
/** The longest an IP stays blocked for failed authentications, ms. */
const MAX_BLOCK_MS = 3_600_000;

/**
 * The hub's request budgets. With Redis they are counted there, so a client's budget is
 * the same whatever node it reaches (N nodes never give N budgets); each limiter is insured
 * by an in-memory one, so a Redis outage degrades them to per-node counting — never to an
 * error, never to no limit. Without Redis they live in this node's memory.
 *
 * Every method answers 0 when allowed, else the ms until the client may try again.
 */
export class RateLimits {
  private readonly perIp: RateLimiterAbstract;
  private readonly authFailures: RateLimiterAbstract;
  /** Blocks an IP earned in the last hour: the back-off's exponent. */
  private readonly authBlocks: RateLimiterAbstract;
  private readonly perPrincipal: RateLimiterAbstract;

  constructor(
    private readonly opts: RateLimitOptions,
    store: { redis: Redis; keyPrefix: string } | null,
  ) {
    const limiter = (name: string, points: number, duration: number) => {
      const memory = new RateLimiterMemory({ keyPrefix: name, points, duration });
      if (!store) return memory;
      const redis = new RateLimiterRedis({
        storeClient: store.redis,
        keyPrefix: `${store.keyPrefix}:rl:${name}`,
        points,
        duration,
        // Fail over to the in-memory insurance at once while Redis is not connected,
        // rather than waiting on a command that cannot be sent.
        rejectIfRedisNotReady: true,
        insuranceLimiter: memory,
      });
      return new RLWrapperTimeouts({ limiter: redis, insuranceLimiter: memory, timeoutMs: REDIS_TIMEOUT_MS });
    };
    this.perIp = limiter('ip', opts.ipPerSec, 1);
    this.authFailures = limiter('authfail', opts.authFailuresPerMin, 60);
    this.authBlocks = limiter('authblock', 1_000_000, 3600);
    this.perPrincipal = limiter('principal', opts.restBurst, Math.max(1, Math.round(opts.restBurst / opts.restPerSec)));
  }

  /** One request from `ip` (before parsing or authentication). */
  async request(ip: string): Promise<number> {
    return consumed(await settle(this.perIp.consume(ip)), this.opts.ipPerSec);
  }

  /** Whether `ip` is blocked for failed authentications (consumes nothing). */
  async authBlocked(ip: string): Promise<number> {
    const res = await this.authFailures.get(ip);
    return res && res.consumedPoints > this.opts.authFailuresPerMin ? Math.max(1, res.msBeforeNext) : 0;
  }

  /**
   * Counts a failed authentication from `ip`. The one that exceeds the budget blocks the IP
   * for authBlockMs × 2^(blocks in the last hour), up to an hour, and answers that wait.
   */
  async authFailed(ip: string): Promise<number> {
    const res = await settle(this.authFailures.consume(ip));
    if (res.consumedPoints <= this.opts.authFailuresPerMin) return 0;
    // Already blocked (concurrent failures crossing together): keep the block that is running.
    if (res.consumedPoints > this.opts.authFailuresPerMin + 1) return Math.max(1, res.msBeforeNext);
    const blocks = (await settle(this.authBlocks.consume(ip))).consumedPoints;
    const ms = Math.min(MAX_BLOCK_MS, this.opts.authBlockMs * 2 ** Math.min(20, blocks - 1));
    await this.authFailures.block(ip, Math.ceil(ms / 1000));
    return ms;
  }

  /** One REST request of an authenticated principal (`user:<id>`, `worker:<id>`). */
  async principal(key: string): Promise<number> {
    return consumed(await settle(this.perPrincipal.consume(key)), this.opts.restBurst);
  }
}

/** consume() rejects with the limiter's answer when over budget: both are an answer here. */
async function settle(p: Promise<RateLimiterRes>): Promise<RateLimiterRes> {
  try {
    return await p;
  } catch (res) {
    if (res instanceof RateLimiterRes) return res;
    throw res;
  }
}

function consumed(res: RateLimiterRes, points: number): number {
  return res.consumedPoints > points ? Math.max(1, res.msBeforeNext) : 0;
}
