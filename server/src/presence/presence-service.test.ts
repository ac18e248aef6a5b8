import { randomBytes, randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ManualClock, type PresenceKicked, type PresenceViewer } from '@handoff/shared';
import { createLogger } from '../logger.js';
import { MemoryPresenceStore, PresenceService, RedisPresenceStore, type PresenceFanout, type PresenceStore } from './presence-service.js';

const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const TTL = 15_000;
const REFRESH = 5_000;

/** What one node pushed to its run rooms, newest last. */
class RecordingFanout implements PresenceFanout {
  readonly updates: Array<{ runId: string; viewers: PresenceViewer[] }> = [];
  updated(runId: string, viewers: PresenceViewer[]): void {
    this.updates.push({ runId, viewers });
  }
  kick(_connIds: string[], _notice: PresenceKicked): void {}
  last(runId: string): string[] {
    return (this.updates.findLast((u) => u.runId === runId)?.viewers ?? []).map((v) => v.name);
  }
}

/** One hub node's presence (joins, leaves, refresh); kicks are exercised end to end in test/e2e/run-page.test.ts. */
function node(store: PresenceStore, clock: ManualClock) {
  const fanout = new RecordingFanout();
  const log = createLogger('silent');
  // orm, gate and grants serve only kick(), which this file does not call.
  const presence = new PresenceService(undefined as never, store, fanout, undefined as never, undefined as never, clock, log, { ttlMs: TTL, refreshMs: REFRESH });
  return { presence, fanout };
}

const user = (name: string, role: 'observer' | 'operator' = 'observer') => ({ id: randomUUID(), name, role });

describe('presence across nodes (real Redis): entries of a node that stops refreshing expire', () => {
  let redis: Redis;
  const prefix = `handoff-test-${randomBytes(4).toString('hex')}`;

  beforeAll(() => {
    redis = new Redis(REDIS_URL);
  });
  afterAll(async () => {
    const keys = await redis.keys(`${prefix}:*`);
    if (keys.length) await redis.del(...keys);
    redis.disconnect();
  });

  it('a viewer on node A is seen on node B; when A dies it disappears within the TTL, B publishes that', async () => {
    const clock = new ManualClock(Date.now());
    const a = node(new RedisPresenceStore(redis, prefix), clock);
    const b = node(new RedisPresenceStore(redis, prefix), clock);
    const runId = randomUUID();
    await a.presence.join(runId, 'sock-a', user('alice'));
    await b.presence.join(runId, 'sock-b', user('bob', 'operator'));
    expect(b.fanout.last(runId)).toEqual(['alice', 'bob']);
    expect((await a.presence.viewers(runId)).map((v) => v.name)).toEqual(['alice', 'bob']);

    // Node A is killed: no leave, no refresh. B keeps refreshing its own.
    for (let t = 0; t < TTL - REFRESH; t += REFRESH) {
      clock.advance(REFRESH);
      await b.presence.refresh();
    }
    expect((await b.presence.viewers(runId)).map((v) => v.name)).toEqual(['alice', 'bob']);
    clock.advance(REFRESH);
    await b.presence.refresh();
    expect(b.fanout.last(runId)).toEqual(['bob']);
    expect((await b.presence.viewers(runId)).map((v) => v.name)).toEqual(['bob']);
    // A refresh that changes nothing publishes nothing.
    const pushes = b.fanout.updates.length;
    clock.advance(REFRESH);
    await b.presence.refresh();
    expect(b.fanout.updates.length).toBe(pushes);
  });

  it('a disconnect leaves every run the socket watched; several tabs of one user count as one viewer', async () => {
    const clock = new ManualClock(Date.now());
    const a = node(new RedisPresenceStore(redis, prefix), clock);
    const [run1, run2] = [randomUUID(), randomUUID()];
    const carol = user('carol');
    await a.presence.join(run1, 'tab-1', carol);
    clock.advance(1000);
    await a.presence.join(run1, 'tab-2', carol);
    await a.presence.join(run2, 'tab-1', carol);
    const [viewer] = await a.presence.viewers(run1);
    expect(viewer).toMatchObject({ name: 'carol', connections: 2, since: new Date(clock.now() - 1000).toISOString() });
    await a.presence.disconnected('tab-1');
    expect((await a.presence.viewers(run1))[0]).toMatchObject({ connections: 1 });
    expect(await a.presence.viewers(run2)).toEqual([]);
    expect(a.fanout.last(run2)).toEqual([]);
  });

  it('a crowd joining at once costs a few list reads and pushes, not one per join; the last push has everyone', async () => {
    const clock = new ManualClock(Date.now());
    const store = new RedisPresenceStore(redis, prefix);
    let reads = 0;
    const counting: PresenceStore = Object.assign(Object.create(store) as PresenceStore, {
      list: (runId: string, now: number) => {
        reads += 1;
        return store.list(runId, now);
      },
    });
    const a = node(counting, clock);
    const runId = randomUUID();
    const crowd = 300;
    await Promise.all(Array.from({ length: crowd }, (_, i) => a.presence.join(runId, `sock-${i}`, user(`viewer-${i}`))));
    const pushes = a.fanout.updates.filter((u) => u.runId === runId);
    // Each join waited for a push that read the store after its own entry was written.
    expect(a.fanout.last(runId)).toHaveLength(crowd);
    expect(pushes.length).toBe(reads);
    expect(reads).toBeLessThan(crowd / 10);
    // A later single join still gets its own push.
    await a.presence.join(runId, 'late', user('late'));
    expect(a.fanout.last(runId)).toHaveLength(crowd + 1);
  });

  it('a kick ban keeps the user out until it lapses (in memory as in Redis)', async () => {
    const clock = new ManualClock(Date.now());
    for (const store of [new MemoryPresenceStore(clock), new RedisPresenceStore(redis, prefix)]) {
      const { presence } = node(store, clock);
      const runId = randomUUID();
      const dave = user('dave');
      const notice: PresenceKicked = { runId, by: { id: 'op', name: 'olga' }, reason: 'noisy', until: new Date(clock.now() + 60_000).toISOString() };
      await store.ban(runId, dave.id, notice, 60_000);
      await expect(presence.assertMayWatch(runId, dave.id)).rejects.toMatchObject({ code: 'FORBIDDEN', message: expect.stringContaining('olga removed you from this run: noisy') });
      await expect(presence.assertMayWatch(runId, user('erin').id)).resolves.toBeUndefined();
    }
    // The memory store's ban lapses with the clock (Redis' own TTL does the same there).
    const memory = new MemoryPresenceStore(clock);
    const runId = randomUUID();
    await memory.ban(runId, 'u', { runId, by: { id: 'o', name: 'o' }, reason: null, until: '' }, 60_000);
    clock.advance(60_001);
    expect(await memory.banned(runId, 'u', clock.now())).toBeNull();
  });
});
