import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, connect, emitAck } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';

describe('authentication and roles', () => {
  let hub: TestHub;
  let observer: string;
  let operator: string;
  let admin: string;
  let worker: string;

  beforeAll(async () => {
    hub = await startTestHub();
    [observer, operator, admin] = [await hub.token('observer'), await hub.token('operator'), await hub.token('admin')];
    worker = await hub.workerToken('auth-test-worker');
  });
  afterAll(async () => {
    await hub?.stop();
  });

  it('answers 401 UNAUTHENTICATED without a token or with a wrong one, on every route', async () => {
    for (const token of [null, 'hnd_not-a-real-token', 'garbage']) {
      for (const [method, path, body] of [
        ['GET', '/api/task-runs'],
        ['POST', '/api/task-runs', { command: { script: 'true' } }],
        ['GET', '/api/task-runs/01a1fc84-556c-72b6-8c34-8b8d9e28c380'],
        ['POST', '/api/task-runs/01a1fc84-556c-72b6-8c34-8b8d9e28c380/cancel', {}],
        ['GET', '/api/auth/whoami'],
      ] as const) {
        const res = await api(hub.url, token, method, path, body);
        expect(res.status, `${method} ${path} with ${token}`).toBe(401);
        expect(res.body.error.code).toBe('UNAUTHENTICATED');
      }
    }
    const runs = await api(hub.url, admin, 'GET', '/api/task-runs');
    expect(runs.body.runs).toEqual([]); // nothing was created by the refused calls
  });

  it('lets an observer read but not create or cancel (403 FORBIDDEN)', async () => {
    expect((await api(hub.url, observer, 'GET', '/api/task-runs')).status).toBe(200);
    const create = await api(hub.url, observer, 'POST', '/api/task-runs', { command: { script: 'true' } });
    expect(create.status).toBe(403);
    expect(create.body.error).toMatchObject({ code: 'FORBIDDEN', message: expect.stringContaining('operator') });
    const run = await api(hub.url, operator, 'POST', '/api/task-runs', { command: { script: 'true' } });
    expect(run.status).toBe(201);
    const cancel = await api(hub.url, observer, 'POST', `/api/task-runs/${run.body.id}/cancel`, {});
    expect(cancel.status).toBe(403);
    expect((await api(hub.url, admin, 'GET', `/api/task-runs/${run.body.id}`)).body.status).toBe('queued');
  });

  it('refuses worker tokens on dashboard routes', async () => {
    const list = await api(hub.url, worker, 'GET', '/api/task-runs');
    expect(list.status).toBe(403);
    expect(list.body.error.code).toBe('FORBIDDEN');
  });

  it('authenticates sockets in the handshake, per namespace', async () => {
    await expect(connect(hub.url, '/dashboard', undefined)).rejects.toMatchObject({ data: { code: 'UNAUTHENTICATED' } });
    await expect(connect(hub.url, '/dashboard', 'hnd_wrong')).rejects.toMatchObject({ data: { code: 'UNAUTHENTICATED' } });
    await expect(connect(hub.url, '/dashboard', worker)).rejects.toMatchObject({ data: { code: 'FORBIDDEN' } });
    await expect(connect(hub.url, '/worker', operator)).rejects.toMatchObject({ data: { code: 'FORBIDDEN' } });
    await expect(connect(hub.url, '/worker', undefined)).rejects.toMatchObject({ data: { code: 'UNAUTHENTICATED' } });
    const ok = await connect(hub.url, '/dashboard', observer);
    expect(ok.connected).toBe(true);
    // Observers watch runs, but approval requests are for operators and up.
    expect(await emitAck(ok, 'approvals:subscribe', {})).toMatchObject({ ok: false, error: { code: 'FORBIDDEN' } });
    ok.close();
    const w = await connect(hub.url, '/worker', worker);
    expect(w.connected).toBe(true);
    w.close();
  });
});
