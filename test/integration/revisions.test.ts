import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LiveSession, Run } from '@handoff/shared';
import { em } from '../../server/src/infra/db/orm.js';
import { api, emitAck, eventually, Viewer } from '../support/clients.js';
import { createTestDatabase, REDIS_URL, type TestDatabase } from '../support/db.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { startWorker, type WorkerProcess } from '../support/worker.js';

// Pushes carry the row's revision, bumped by the database on every change (whatever code
// path made it); a run's revision also moves with its sessions and grants. A dashboard
// that keeps only newer revisions ends on the database's state, whatever order pushes
// from two nodes arrive in.
describe('revisions: pushes never go back in time', () => {
  let db: TestDatabase;
  let a: TestHub;
  let b: TestHub;
  let worker: WorkerProcess;
  let operator: string;

  beforeAll(async () => {
    db = await createTestDatabase();
    const env = { REDIS_KEY_PREFIX: `handoff-rev-${randomBytes(4).toString('hex')}` };
    a = await startTestHub({ databaseUrl: db.url, redisUrl: REDIS_URL, env });
    b = await startTestHub({ databaseUrl: db.url, redisUrl: REDIS_URL, env });
    operator = await a.token('operator');
    worker = startWorker({ hubUrl: b.url, token: await b.workerToken(`rev-${randomBytes(3).toString('hex')}`) });
  });
  afterAll(async () => {
    await worker?.stop();
    await a?.stop();
    await b?.stop();
    await db?.drop();
  });

  const dbRevision = async (table: string, id: string) =>
    Number((await em(a.orm).execute<{ revision: number }[]>(`select revision from ${table} where id = ?`, [id]))[0]!.revision);

  it('every change bumps the revision; session changes bump the run; commands on two nodes converge on the database state', async () => {
    const viewer = await Viewer.connect(a.url, await a.token('observer'));
    const pushed: Run[] = [];
    const sessions: LiveSession[] = [];
    viewer.socket.on('run:updated', (r: Run) => pushed.push(r));
    viewer.socket.on('session:updated', (s: LiveSession) => sessions.push(s));
    const created = await api(a.url, operator, 'POST', '/api/task-runs', { command: { script: 'for i in $(seq 1 400); do sleep 0.05; done' } });
    const runId = created.body.id as string;
    expect(created.body.revision).toBe(1);
    await emitAck(viewer.socket, 'run:subscribe', { runId });
    await viewer.untilStatus(runId, ['running'], 20_000);
    const web = await viewer.until('web READY', () => sessions.find((s) => s.runId === runId && s.status === 'READY'));
    expect(await dbRevision('runs', runId)).toBeGreaterThan(2); // assign, start, session insert + ready

    // A session change alone moves the run's revision.
    const before = await dbRevision('runs', runId);
    const extended = await api(b.url, operator, 'POST', `/api/task-runs/${runId}/live-session/extend`, { ttlMinutes: 30 });
    expect(extended.body.session.revision).toBeGreaterThan(web.revision);
    expect(await dbRevision('runs', runId)).toBeGreaterThan(before);

    // Control changes sent alternately to both nodes, back to back.
    const actions = Array.from({ length: 10 }, (_, i) => ({ hub: i % 2 ? b : a, action: i % 2 ? 'resume' : 'pause' }));
    for (const { hub, action } of actions) {
      const res = await api(hub.url, operator, 'POST', `/api/task-runs/${runId}/control`, action === 'pause' ? { action, mode: 'hard' } : { action });
      expect(res.status, JSON.stringify(res.body)).toBe(200);
    }
    const final = await eventually('the worker applied every change', async () => {
      const r = (await api(a.url, operator, 'GET', `/api/task-runs/${runId}`)).body as Run;
      return r.control.appliedSeq === r.control.seq && r.control.seq >= 10 ? r : undefined;
    });
    // What a dashboard shows when it keeps only newer revisions: the database's state.
    // Every change is published: the newest push reaches the database's revision.
    const newestPush = () => pushed.filter((r) => r.id === runId).reduce((x, y) => (y.revision > x.revision ? y : x));
    await eventually('a push at the database’s revision', async () => newestPush().revision >= (await dbRevision('runs', runId)), 5000).catch(async () => {
      throw new Error(`newest push ${newestPush().revision}, database ${await dbRevision('runs', runId)}`);
    });
    const newest = newestPush();
    expect(newest.control).toEqual(final.control);
    // Revisions of one row only grow; the same revision always carries the same state.
    const byRevision = new Map<number, string>();
    for (const r of pushed.filter((p) => p.id === runId)) {
      const state = JSON.stringify({ status: r.status, control: r.control });
      expect(byRevision.get(r.revision) ?? state).toBe(state);
      byRevision.set(r.revision, state);
    }
    // Every session push carries the revision the database gave that change: a status change is never pushed as old.
    await api(a.url, operator, 'POST', `/api/task-runs/${runId}/live-session/revoke`, { provider: 'web' });
    const revoked = await viewer.until('web REVOKED', () => sessions.find((s) => s.id === web.id && s.status === 'REVOKED'));
    expect(revoked.revision).toBe(await dbRevision('live_sessions', web.id));
    expect(revoked.revision).toBeGreaterThan(extended.body.session.revision);
    const byStatus = sessions.filter((s) => s.id === web.id).map((s) => [s.status, s.revision] as const);
    for (let i = 1; i < byStatus.length; i++) if (byStatus[i]![0] !== byStatus[i - 1]![0]) expect(byStatus[i]![1]).not.toBe(byStatus[i - 1]![1]);
    // A resubscribe answers the current revision.
    const again = await emitAck<{ run: Run }>(viewer.socket, 'run:subscribe', { runId });
    expect(again.ok && again.data.run.revision).toBe(await dbRevision('runs', runId));
    await api(a.url, operator, 'POST', `/api/task-runs/${runId}/cancel`, {});
    viewer.close();
  });
});
