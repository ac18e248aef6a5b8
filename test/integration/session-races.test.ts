import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LiveSession } from '@handoff/shared';
import { em } from '../../server/src/infra/db/orm.js';
import { api, emitAck, Viewer } from '../support/clients.js';
import { createTestDatabase, REDIS_URL, type TestDatabase } from '../support/db.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { startWorker, type WorkerProcess } from '../support/worker.js';

// Two hub nodes on one database and one Redis, both running a sweeper.
describe('live sessions across two hub nodes, and racing commands', () => {
  let db: TestDatabase;
  let a: TestHub;
  let b: TestHub;
  let worker: WorkerProcess;
  let operator: string;
  let viewer: Viewer;

  beforeAll(async () => {
    db = await createTestDatabase();
    const env = { REDIS_KEY_PREFIX: `handoff-race-${randomBytes(4).toString('hex')}`, LIVE_SESSION_TTL: '3s', LIVE_GRACE: '2s', SWEEP_INTERVAL: '50ms' };
    a = await startTestHub({ databaseUrl: db.url, redisUrl: REDIS_URL, env });
    b = await startTestHub({ databaseUrl: db.url, redisUrl: REDIS_URL, env });
    operator = await a.token('operator');
    viewer = await Viewer.connect(a.url, await a.token('observer'));
    worker = startWorker({ hubUrl: b.url, token: await b.workerToken('race-worker'), capacity: 4 });
  });
  afterAll(async () => {
    viewer?.close();
    await worker?.stop();
    await a?.stop();
    await b?.stop();
    await db?.drop();
  });

  const running = async () => {
    const res = await api(a.url, operator, 'POST', '/api/task-runs', { command: { script: 'sleep 60' } });
    const runId = res.body.id as string;
    await emitAck(viewer.socket, 'run:subscribe', { runId });
    await viewer.untilStatus(runId, ['running']);
    // Its default web share too: a subscribe answered between the start's commit and the share's
    // (a loaded machine) shows the run running without it, and a revoke sent then finds nothing.
    await viewer.until('the default web share READY', () => viewer.runs.get(runId)?.sessions.some((s) => s.provider === 'web' && s.status === 'READY'));
    return runId;
  };
  const actions = async (sessionId: string) =>
    (await em(a.orm).execute<{ action: string }[]>('select action from audit_events where session_id = ? order by seq', [sessionId])).map((r) => r.action);

  it('20 concurrent creates spread over both nodes make one session', async () => {
    const runId = await running();
    expect((await api(a.url, operator, 'POST', `/api/task-runs/${runId}/live-session/revoke`, {})).status).toBe(200);
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => api(i % 2 ? a.url : b.url, operator, 'POST', `/api/task-runs/${runId}/live-session`, { provider: 'web', ttlMinutes: 10 })));
    expect(new Set(results.map((r) => r.body.session.id)).size).toBe(1);
    expect(results.filter((r) => r.status === 201)).toHaveLength(1);
    const acts = await actions(results[0]!.body.session.id);
    expect(acts.filter((x) => x === 'session.create')).toHaveLength(1);
    expect(acts.filter((x) => x === 'session.reuse')).toHaveLength(19);
    await api(a.url, operator, 'POST', `/api/task-runs/${runId}/cancel`, {});
  });

  it('with two sweepers, a session gets exactly one grace warning and one expiry', async () => {
    const runId = await running(); // its default web session: TTL 3 s, grace 2 s before
    const [s] = (await api(a.url, operator, 'GET', `/api/task-runs/${runId}/live-sessions`)).body.sessions as LiveSession[];
    const graces: string[] = [];
    viewer.socket.on('session:grace', (g: { sessionId: string }) => graces.push(g.sessionId));
    const deadline = Date.now() + 6000;
    while (Date.now() < deadline && !(await actions(s!.id)).includes('session.expire')) await new Promise((r) => setTimeout(r, 100));
    const acts = await actions(s!.id);
    expect(acts.filter((x) => x === 'session.grace')).toHaveLength(1);
    expect(acts.filter((x) => x === 'session.expire')).toHaveLength(1);
    expect(graces.filter((g) => g === s!.id)).toHaveLength(1);
    await api(a.url, operator, 'POST', `/api/task-runs/${runId}/cancel`, {});
  });

  it('an extend racing the expiry has exactly one winner (10 races)', async () => {
    const runId = await running();
    let extendedWins = 0;
    let expiryWins = 0;
    for (let i = 0; i < 10; i++) {
      await api(a.url, operator, 'POST', `/api/task-runs/${runId}/live-session/revoke`, {});
      const created = await api(a.url, operator, 'POST', `/api/task-runs/${runId}/live-session`, { provider: 'web', ttlMinutes: 10 });
      const id = created.body.session.id as string;
      // Due within 0–45 ms (by the database clock): the sweeps and the extend race for it.
      await em(a.orm).execute(`update live_sessions set expires_at = now() + (? * interval '1 millisecond') where id = ?`, [i * 5, id]);
      const [ext] = await Promise.all([
        api(b.url, operator, 'POST', `/api/task-runs/${runId}/live-session/extend`, { ttlMinutes: 5 }),
        a.sweeper.tick(),
        b.sweeper.tick(),
      ]);
      // Settle: one more sweep on each node must neither end an extended session nor miss an expired one.
      await Promise.all([a.sweeper.tick(), b.sweeper.tick()]);
      const [row] = await em(a.orm).execute<{ status: string; end_reason: string | null }[]>('select status, end_reason from live_sessions where id = ?', [id]);
      const acts = await actions(id);
      if (ext.status === 200) {
        extendedWins++;
        expect(row).toMatchObject({ status: 'READY' });
        expect(acts).not.toContain('session.expire');
      } else {
        expiryWins++;
        expect(ext.body.error.code).toBe('EXPIRED');
        expect(row).toMatchObject({ status: 'ENDED', end_reason: 'ttl' });
        expect(acts.filter((x) => x === 'session.expire')).toHaveLength(1);
        expect(acts).not.toContain('session.extend');
      }
    }
    console.log(`extend vs expiry: extend won ${extendedWins}, expiry won ${expiryWins} of 10; never both`);
    await api(a.url, operator, 'POST', `/api/task-runs/${runId}/cancel`, {});
  });

  it('a share created while the run is ending never outlives it: the create waits for the exit and is refused (409), the session unchanged', async () => {
    // liveSession:false: the run's one session is DISABLED; creating a share enables it (an UPDATE).
    const res = await api(a.url, operator, 'POST', '/api/task-runs', { command: { script: 'sleep 60' }, liveSession: false });
    const runId = res.body.id as string;
    await emitAck(viewer.socket, 'run:subscribe', { runId });
    await viewer.untilStatus(runId, ['running']);
    const sessionRow = () => em(a.orm).execute<Record<string, unknown>[]>('select * from live_sessions where run_id = ?', [runId]);
    const before = await sessionRow();
    expect(before.map((r) => r.status)).toEqual(['DISABLED']);

    // The run's exit, as the hub writes it, committed only after the create has read the run as running.
    const exit = new pg.Client({ connectionString: db.url });
    await exit.connect();
    try {
      await exit.query('begin');
      await exit.query(`update runs set status = 'succeeded', exit_code = 0, ended_at = now() where id = $1`, [runId]);
      let answered = false;
      const create = api(b.url, operator, 'POST', `/api/task-runs/${runId}/live-session`, { provider: 'web' }).finally(() => (answered = true));
      await new Promise((r) => setTimeout(r, 500));
      // The race happened: the create is in flight, held by the uncommitted exit.
      expect(answered).toBe(false);
      await exit.query('commit');
      const created = await create;
      expect(created.status, JSON.stringify(created.body)).toBe(409);
      expect(created.body.error.code).toBe('STATE_CONFLICT');
    } finally {
      await exit.end();
    }
    // Nothing of the create stayed: the session's row is exactly as before (no READY share on a finished run).
    expect(await sessionRow()).toEqual(before);
  });
});
