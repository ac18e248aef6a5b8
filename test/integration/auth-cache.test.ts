import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ManualClock } from '@handoff/shared';
import { em } from '../../server/src/infra/db/orm.js';
import { startTestHub, type TestHub } from '../support/hub.js';

/**
 * The token lookup cache (issue 10 item 3: token lookups cached briefly, revocation within a
 * second) holds only what it may still reuse: a node holding thousands of workers does not keep
 * one entry per worker that connected once. On the hub's own clock, moved by hand.
 */
describe('token lookup cache', () => {
  const clock = new ManualClock(Date.now());
  let hub: TestHub;
  const tokens: string[] = [];

  beforeAll(async () => {
    hub = await startTestHub({ clock });
    for (let i = 0; i < 40; i++) tokens.push(await hub.workerToken(`cache-${randomBytes(3).toString('hex')}-${i}`));
  });
  afterAll(async () => {
    await hub?.stop();
  });

  it('reuses a lookup within its 500 ms, drops the expired ones as new lookups come in, and a revoked token is refused once its entry expired', async () => {
    const before = hub.auth.cachedLookups;
    const principals = await Promise.all(tokens.map((t) => hub.auth.authenticate(t)));
    expect(principals.every((p) => p?.kind === 'worker')).toBe(true);
    expect(hub.auth.cachedLookups).toBe(before + tokens.length);

    // Within the TTL a second lookup is served from memory: it still answers after the token's row is gone from view.
    const [first] = tokens;
    const tokenId = principals[0]!.tokenId;
    await em(hub.orm).execute(`update api_tokens set revoked_at = now() where id = ?`, [tokenId]);
    clock.advance(200);
    expect((await hub.auth.authenticate(first))?.id).toBe(principals[0]!.id);

    // Past the TTL: the next lookup drops every expired entry, and the revoked token is refused.
    clock.advance(400);
    expect(await hub.auth.authenticate(first)).toBeNull();
    expect(hub.auth.cachedLookups).toBe(1);
    expect(await hub.auth.authenticate(tokens[1])).toMatchObject({ kind: 'worker', id: principals[1]!.id });
    expect(hub.auth.cachedLookups).toBe(2);
  });

  it('never serves a token past its expiry from the cache, and refuses a token revoked here at once', async () => {
    const name = `expiring-${randomBytes(3).toString('hex')}`;
    const { token: expiring } = await hub.auth.addUser(name, 'operator', { ttlMs: 300 });
    expect(await hub.auth.authenticate(expiring)).toMatchObject({ kind: 'user', name });
    clock.advance(299);
    expect(await hub.auth.authenticate(expiring)).toMatchObject({ kind: 'user', name }); // from the cache
    clock.advance(1); // its expiry, 200 ms before the cached lookup would have run out
    expect(await hub.auth.authenticate(expiring)).toBeNull();

    const { token, user } = await hub.auth.addUser(`revoked-${randomBytes(3).toString('hex')}`, 'operator');
    const principal = await hub.auth.authenticate(token);
    expect(principal).toMatchObject({ kind: 'user', id: user.id });
    await hub.auth.revokeToken({ type: 'system', id: 'test' }, principal!.tokenId);
    expect(await hub.auth.authenticate(token)).toBeNull();
  });
});
