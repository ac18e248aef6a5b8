import { Redis } from 'ioredis';
import { afterAll, describe, expect, it, onTestFinished, vi } from 'vitest';
import { clientIp } from '../http/client-ip.js';
import { RateLimits } from './rate-limits.js';

const OPTS = { ipPerSec: 1000, authFailuresPerMin: 3, authBlockMs: 2000, restPerSec: 1, restBurst: 5 };

describe('RateLimits', () => {
  // A Redis nobody listens on: the limiters must fall back to memory, never fail a request.
  const dead = new Redis('redis://127.0.0.1:1', { enableOfflineQueue: false, maxRetriesPerRequest: 1, retryStrategy: () => 1000 });
  dead.on('error', () => {});
  afterAll(() => dead.disconnect());

  // A Redis that accepts commands and never answers (connected, but hung).
  const hung = { status: 'ready', defineCommand() {}, rlflxIncr: () => new Promise(() => {}), eval: () => new Promise(() => {}), pttl: () => new Promise(() => {}), get: () => new Promise(() => {}), set: () => new Promise(() => {}), multi: () => { throw new Error('hung'); } } as unknown as Redis;

  for (const [name, store] of [
    ['in memory', null],
    ['Redis down (insurance in memory)', { redis: dead, keyPrefix: 'rl-test' }],
    ['Redis hung (insurance in memory after the timeout)', { redis: hung, keyPrefix: 'rl-test' }],
  ] as const) {
    it(`${name}: failures past the budget block that IP only; a principal gets its burst`, async () => {
      const limits = new RateLimits(OPTS, store);
      for (let i = 0; i < 3; i++) expect(await limits.authFailed('10.0.0.1')).toBe(0);
      expect(await limits.authFailed('10.0.0.1')).toBe(2000);
      expect(await limits.authBlocked('10.0.0.1')).toBeGreaterThan(1000);
      expect(await limits.authBlocked('10.0.0.2')).toBe(0);
      // The per-principal budget: burst, then a wait.
      for (let i = 0; i < 5; i++) expect(await limits.principal('user:1')).toBe(0);
      expect(await limits.principal('user:1')).toBeGreaterThan(0);
    });
  }
});

describe('RateLimits back-off', () => {
  it('each further block of an IP within the hour doubles', async () => {
    // The in-memory limiter keeps time with Date.now and timers: faked, not slept through.
    vi.useFakeTimers();
    onTestFinished(() => void vi.useRealTimers());
    const limits = new RateLimits({ ...OPTS, authFailuresPerMin: 1, authBlockMs: 1000 }, null);
    expect(await limits.authFailed('10.0.0.3')).toBe(0);
    expect(await limits.authFailed('10.0.0.3')).toBe(1000);
    await vi.advanceTimersByTimeAsync(1100);
    expect(await limits.authBlocked('10.0.0.3')).toBe(0);
    expect(await limits.authFailed('10.0.0.3')).toBe(0);
    expect(await limits.authFailed('10.0.0.3')).toBe(2000);
    expect(await limits.authBlocked('10.0.0.3')).toBeGreaterThan(1000);
  });
});

describe('clientIp', () => {
  it('ignores X-Forwarded-For unless proxies are trusted, then takes the entry that many hops back', () => {
    expect(clientIp('::ffff:127.0.0.1', '6.6.6.6', 0)).toBe('127.0.0.1');
    expect(clientIp('10.0.0.9', '6.6.6.6, 203.0.113.7', 1)).toBe('203.0.113.7');
    expect(clientIp('10.0.0.9', '6.6.6.6, 203.0.113.7, 10.0.0.8', 2)).toBe('203.0.113.7');
    expect(clientIp('10.0.0.9', undefined, 1)).toBe('10.0.0.9');
  });
});
