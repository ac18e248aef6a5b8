import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LiveSession } from '@handoff/shared';
import { api, eventually } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { ScriptedWorker } from '../support/scripted-worker.js';

// A worker's `run:started` is sent until it is acked. When the hub's handling fails after the
// start committed (here: the web share's insert fails once, through a trigger in the test's own
// database), the repeat finds the run already running — it must still leave the run with its
// web share, or nobody could ever watch it. A repeat never brings back a share that was ended.
describe('a start report repeated after the hub failed half-way', () => {
  let hub: TestHub;
  let admin: string;
  let worker: ScriptedWorker;
  let db: pg.Client;

  const run = async (runId: string) => (await api(hub.url, admin, 'GET', `/api/task-runs/${runId}`)).body as { status: string; sessions: LiveSession[] };
  const auditActions = async (runId: string) =>
    (await db.query<{ action: string }>('select action from audit_events where run_id = $1 order by seq', [runId])).rows.map((r) => r.action);
  const newRun = async () => {
    const runId = (await api(hub.url, admin, 'POST', '/api/task-runs', { command: { script: 'sleep 600' } })).body.id as string;
    await eventually('the run assigned to the worker', async () => worker.assigned.some((a) => a.runId === runId));
    return runId;
  };

  beforeAll(async () => {
    hub = await startTestHub();
    admin = await hub.token('admin');
    db = new pg.Client({ connectionString: hub.db!.url });
    await db.connect();
    worker = await ScriptedWorker.connect(hub.url, await hub.workerToken(`retry-${randomBytes(3).toString('hex')}`));
    await worker.hello([], 4);
  });
  afterAll(async () => {
    await db?.end();
    worker?.close();
    await hub?.stop();
  });

  it('the repeat makes the missing web share (once, with its audit rows); a repeat after a revoke does not bring it back', async () => {
    const runId = await newRun();
    // The next insert into live_sessions fails, once (a sequence: not rolled back with it).
    await db.query(`create sequence web_share_fail_once`);
    await db.query(`create function web_share_fail_once() returns trigger language plpgsql security definer as $$
      begin if nextval('web_share_fail_once') = 1 then raise exception 'injected: live_sessions insert failed'; end if; return new; end $$`);
    await db.query(`create trigger web_share_fail_once before insert on live_sessions for each row execute function web_share_fail_once()`);
    try {
      const first = await worker.started(runId);
      expect(first.ok).toBe(false);
      // The failure hit after the start committed: the run is running, without a web share.
      expect((await run(runId)).status).toBe('running');
      expect((await run(runId)).sessions).toEqual([]);
      expect((await db.query(`select last_value from web_share_fail_once`)).rows[0].last_value).toBe('1');

      const repeat = await worker.started(runId);
      expect(repeat.ok).toBe(true);
    } finally {
      await db.query(`drop trigger web_share_fail_once on live_sessions`);
      await db.query(`drop function web_share_fail_once()`);
      await db.query(`drop sequence web_share_fail_once`);
    }
    const shares = (await run(runId)).sessions;
    expect(shares).toHaveLength(1);
    expect(shares[0]).toMatchObject({ provider: 'web', status: 'READY' });
    expect(await auditActions(runId)).toEqual(['run.create', 'run.assign', 'run.start', 'session.create', 'session.ready']);

    // A third report changes nothing.
    expect((await worker.started(runId)).ok).toBe(true);
    expect((await run(runId)).sessions.map((s) => [s.id, s.status])).toEqual([[shares[0]!.id, 'READY']]);
    expect(await auditActions(runId)).toEqual(['run.create', 'run.assign', 'run.start', 'session.create', 'session.ready']);

    // Revoked by an operator, then a late repeat: the run stays without a web share.
    const revoked = await api(hub.url, admin, 'POST', `/api/task-runs/${runId}/live-session/revoke`, {});
    expect(revoked.status, JSON.stringify(revoked.body)).toBe(200);
    expect((await worker.started(runId)).ok).toBe(true);
    const after = (await run(runId)).sessions;
    expect(after.map((s) => [s.id, s.status])).toEqual([[shares[0]!.id, 'REVOKED']]);
    await api(hub.url, admin, 'POST', `/api/task-runs/${runId}/cancel`, {});
  });
});
