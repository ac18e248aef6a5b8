import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Socket } from 'socket.io-client';
import { em } from '../../server/src/infra/db/orm.js';
import { api, connect, eventually } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';

const disconnected = (socket: Socket) => new Promise<number>((resolve) => socket.once('disconnect', () => resolve(Date.now())));

describe('token lifecycle: list, revoke (biting within a second, sockets included), expiry, last use', () => {
  let hub: TestHub;
  let admin: string;

  beforeAll(async () => {
    hub = await startTestHub({ env: { SWEEP_INTERVAL: '100ms' } });
    admin = await hub.token('admin');
  });
  afterAll(async () => {
    await hub?.stop();
  });

  const newUser = async () => {
    const name = `tok-${randomUUID().slice(0, 8)}`;
    const { user, token } = await hub.auth.addUser(name, 'operator');
    return { name, id: user.id, token };
  };

  it('an admin lists a user’s tokens without secrets; last use is recorded; only admins may', async () => {
    const alice = await newUser();
    const second = await hub.auth.addUserToken(alice.name, 'laptop', { ttlMs: 3_600_000 });
    expect((await api(hub.url, second, 'GET', '/api/auth/whoami')).status).toBe(200);
    const listed = await eventually('last use written', async () => {
      const res = await api(hub.url, admin, 'GET', `/api/users/${alice.id}/tokens`);
      return res.body.tokens.find((t: { label: string; lastUsedAt: string | null }) => t.label === 'laptop' && t.lastUsedAt) ? res : undefined;
    });
    expect(listed.body.tokens.map((t: { label: string }) => t.label).sort()).toEqual([`${alice.name} (initial)`, 'laptop'].sort());
    const laptop = listed.body.tokens.find((t: { label: string }) => t.label === 'laptop');
    expect(Date.parse(laptop.expiresAt) - Date.parse(laptop.createdAt)).toBe(3_600_000);
    const text = JSON.stringify(listed.body);
    expect(text).not.toContain(second);
    expect(text).not.toMatch(/tokenHash|token_hash|[0-9a-f]{64}/);
    expect((await api(hub.url, alice.token, 'GET', `/api/users/${alice.id}/tokens`)).status).toBe(403);
    expect((await api(hub.url, admin, 'GET', `/api/users/${randomUUID()}/tokens`)).status).toBe(404);
    expect((await api(hub.url, admin, 'GET', '/api/users/not-a-uuid/tokens')).status).toBe(400);
  });

  it('DELETE /api/tokens/:id: REST refuses it and its open dashboard socket is disconnected within 1 s; audited; twice is 409', async () => {
    const bob = await newUser();
    const socket = await connect(hub.url, '/dashboard', bob.token);
    const gone = disconnected(socket);
    const tokens = (await api(hub.url, admin, 'GET', `/api/users/${bob.id}/tokens`)).body.tokens as { id: string }[];
    const at = Date.now();
    const revoked = await api(hub.url, admin, 'DELETE', `/api/tokens/${tokens[0]!.id}`);
    expect(revoked.status).toBe(200);
    expect(revoked.body.token.revokedAt).toBeTruthy();
    expect((await gone) - at).toBeLessThan(1000);
    await eventually('REST refuses the token', async () => (await api(hub.url, bob.token, 'GET', '/api/auth/whoami')).status === 401, 1000);
    expect((await api(hub.url, admin, 'DELETE', `/api/tokens/${tokens[0]!.id}`)).status).toBe(409);
    expect((await api(hub.url, admin, 'DELETE', `/api/tokens/${randomUUID()}`)).status).toBe(404);
    const [row] = await em(hub.orm).execute<{ n: number }[]>(`select count(*)::int as n from audit_events where action = 'token.revoke' and metadata->>'id' = ?`, [tokens[0]!.id]);
    expect(row!.n).toBe(1);
  });

  it('a token revoked from another process (the CLI) and an expiring token: refused and their sockets cut off within about a second', async () => {
    const carol = await newUser();
    const socket = await connect(hub.url, '/dashboard', carol.token);
    const gone = disconnected(socket);
    const at = Date.now();
    await em(hub.orm).execute(`update api_tokens set revoked_at = now() where user_id = ?`, [carol.id]);
    expect((await gone) - at).toBeLessThan(1500);

    const dave = await newUser();
    const short = await hub.auth.addUserToken(dave.name, 'short', { ttlMs: 1500 });
    const expiring = await connect(hub.url, '/dashboard', short);
    const cut = disconnected(expiring);
    const expiresAt = Date.now() + 1500;
    expect((await api(hub.url, short, 'GET', '/api/auth/whoami')).status).toBe(200);
    expect((await cut) - expiresAt).toBeLessThan(1500);
    expect((await api(hub.url, short, 'GET', '/api/auth/whoami')).status).toBe(401);
    await expect(connect(hub.url, '/dashboard', short)).rejects.toThrow();
  });
});
