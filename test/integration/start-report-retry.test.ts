import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LiveSession } from '@handoff/shared';
import { api, emitAck, eventually, Viewer } from '../support/clients.js';
import { failNthInsert } from '../support/db.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { ScriptedWorker } from '../support/scripted-worker.js';

// A worker's `run:started` is sent until it is acked. When the hub's handling fails after the
// start committed (here: the web share's insert fails once, through a trigger in the test's own
// database), the repeat finds the run already running — it must still leave the run with its
// web share, or nobody could ever watch it, and with the start's other reactions: the configured
// tmate share (LIVE_SESSION_PROVIDER=tmate) and a share asked for while the run was assigned.
// A repeat never brings back a share that was ended, and never makes one twice. The scripted
// worker stands in for tmate and upterm (no relay is reachable here): it records the share
// requests it gets and answers them, as a worker acks `share:start` before starting the share.
describe('a start report repeated after the hub failed half-way', () => {
  let hub: TestHub;
  let admin: string;
  let worker: ScriptedWorker;
  let db: pg.Client;
  let viewer: Viewer;

  /** `share:start` requests the worker got: session id → provider. */
  const shareRequests: Array<{ sessionId: string; provider: string }> = [];

  const run = async (runId: string) => (await api(hub.url, admin, 'GET', `/api/task-runs/${runId}`)).body as { status: string; sessions: LiveSession[] };
  const shares = async (runId: string) => (await run(runId)).sessions.map((s) => [s.provider, s.status]).sort();
  const auditActions = async (runId: string) =>
    (await db.query<{ action: string }>('select action from audit_events where run_id = $1 order by seq', [runId])).rows.map((r) => r.action);
  /** `run:updated` pushes a dashboard got, by run: a repeat's reactions end with one. */
  const updates = new Map<string, number>();
  /** A repeated report, acked, and its reactions (which run after the ack) finished. */
  const repeatSettled = async (runId: string) => {
    const before = updates.get(runId) ?? 0;
    expect((await worker.started(runId)).ok).toBe(true);
    await eventually('the repeat’s reactions published', async () => (updates.get(runId) ?? 0) > before);
  };
  const newRun = async () => {
    const runId = (await api(hub.url, admin, 'POST', '/api/task-runs', { command: { script: 'sleep 600' } })).body.id as string;
    await eventually('the run assigned to the worker', async () => worker.assigned.some((a) => a.runId === runId));
    expect((await emitAck(viewer.socket, 'run:subscribe', { runId })).ok).toBe(true);
    return runId;
  };

  beforeAll(async () => {
    hub = await startTestHub({ env: { LIVE_SESSION_PROVIDER: 'tmate', LIVE_SESSION_ENABLED_DEFAULT: 'true' } });
    admin = await hub.token('admin');
    db = new pg.Client({ connectionString: hub.db!.url });
    await db.connect();
    worker = await ScriptedWorker.connect(hub.url, await hub.workerToken(`retry-${randomBytes(3).toString('hex')}`));
    worker.socket.on('share:start', (req: { sessionId: string; provider: string }, ack: (r: unknown) => void) => {
      shareRequests.push({ sessionId: req.sessionId, provider: req.provider });
      ack({ ok: true, data: {} });
    });
    await worker.hello([], 4);
    viewer = await Viewer.connect(hub.url, admin);
    viewer.socket.on('run:updated', (r: { id: string }) => updates.set(r.id, (updates.get(r.id) ?? 0) + 1));
  });
  afterAll(async () => {
    await db?.end();
    viewer?.close();
    worker?.close();
    await hub?.stop();
  });

  /** The first start report fails at the web share's insert (after the start committed); the repeat is acked. */
  const failFirstStart = async (runId: string) => {
    // The next insert into live_sessions fails, once.
    const fault = await failNthInsert(db, 'live_sessions', 1);
    try {
      const first = await worker.started(runId);
      expect(first.ok).toBe(false);
      // The failure hit after the start committed: the run is running, without a web share.
      expect((await run(runId)).status).toBe('running');
      expect((await run(runId)).sessions.filter((x) => x.provider !== 'upterm')).toEqual([]);
      expect(await fault.seen()).toBe(1);

      const repeat = await worker.started(runId);
      expect(repeat.ok).toBe(true);
    } finally {
      await fault.remove();
    }
  };

  it('the repeat makes the missing web share (once, with its audit rows) and the configured share; a repeat after a revoke does not bring either back', async () => {
    const runId = await newRun();
    await failFirstStart(runId);
    // The web share before the ack; the configured tmate share right after it, asked of the worker.
    await eventually('the configured share asked of the worker', async () => shareRequests.some((r) => r.provider === 'tmate') && (await shares(runId)).length === 2);
    expect(await shares(runId)).toEqual([['tmate', 'STARTING'], ['web', 'READY']]);
    const tmate = (await run(runId)).sessions.find((s) => s.provider === 'tmate')!;
    expect(shareRequests.filter((r) => r.sessionId === tmate.id)).toHaveLength(1);
    const shares0 = (await run(runId)).sessions.filter((s) => s.provider === 'web');
    expect(shares0).toHaveLength(1);
    const audit = await auditActions(runId);
    expect(audit).toEqual(['run.create', 'run.assign', 'run.start', 'session.create', 'session.ready', 'session.create']);

    // A third report changes nothing: no share made twice, no audit row, no request again.
    await repeatSettled(runId);
    expect((await run(runId)).sessions.map((s) => [s.id, s.status]).sort()).toEqual([[shares0[0]!.id, 'READY'], [tmate.id, 'STARTING']].sort());
    expect(await auditActions(runId)).toEqual(audit);
    expect(shareRequests.filter((r) => r.sessionId === tmate.id)).toHaveLength(1);

    // Both revoked by an operator, then a late repeat: the run stays without shares.
    const revoked = await api(hub.url, admin, 'POST', `/api/task-runs/${runId}/live-session/revoke`, {});
    expect(revoked.status, JSON.stringify(revoked.body)).toBe(200);
    expect(await shares(runId)).toEqual([['tmate', 'REVOKED'], ['web', 'REVOKED']]);
    const requestsBefore = shareRequests.length;
    await repeatSettled(runId);
    expect(await shares(runId)).toEqual([['tmate', 'REVOKED'], ['web', 'REVOKED']]);
    expect(shareRequests).toHaveLength(requestsBefore);
    await api(hub.url, admin, 'POST', `/api/task-runs/${runId}/cancel`, {});
  });

  it('the configured share failing after the ack is retried by the hub (the worker reports no more): made once, asked of the worker once', async () => {
    const runId = await newRun();
    // The web share (before the ack) is inserted; the configured tmate share (after it) fails, once.
    const fault = await failNthInsert(db, 'live_sessions', 2);
    try {
      expect((await worker.started(runId)).ok).toBe(true);
      await eventually('the configured share made on a retry and asked of the worker', async () => {
        const tmate = (await run(runId)).sessions.find((x) => x.provider === 'tmate');
        return !!tmate && shareRequests.some((r) => r.sessionId === tmate.id);
      }, 5000);
      // The second insert failed (the tmate share's first try), the third made it.
      expect(await fault.seen()).toBe(3);
    } finally {
      await fault.remove();
    }
    expect(await shares(runId)).toEqual([['tmate', 'STARTING'], ['web', 'READY']]);
    const tmate = (await run(runId)).sessions.find((s) => s.provider === 'tmate')!;
    expect(shareRequests.filter((r) => r.sessionId === tmate.id)).toHaveLength(1);
    expect(await auditActions(runId)).toEqual(['run.create', 'run.assign', 'run.start', 'session.create', 'session.ready', 'session.create']);
    expect(hub.logs()).toMatch(/its reactions failed; retrying/);
    expect(hub.logs()).toMatch(/start reactions succeeded on a retry/);
    await api(hub.url, admin, 'POST', `/api/task-runs/${runId}/cancel`, {});
  });

  it('a share asked for while the run was assigned is asked of the worker on the repeat', async () => {
    const runId = await newRun();
    const asked = await api(hub.url, admin, 'POST', `/api/task-runs/${runId}/live-session`, { provider: 'upterm' });
    expect(asked.status, JSON.stringify(asked.body)).toBe(201);
    const upterm = (await run(runId)).sessions.find((x) => x.provider === 'upterm')!;
    expect(upterm).toMatchObject({ status: 'STARTING' });
    expect(shareRequests.some((r) => r.sessionId === upterm.id)).toBe(false); // nothing to share before the run starts
    await failFirstStart(runId);
    await eventually('the waiting share asked of the worker', async () => shareRequests.some((r) => r.sessionId === upterm.id));
    await eventually('the configured share asked of the worker', async () => (await shares(runId)).length === 3);
    expect(await shares(runId)).toEqual([['tmate', 'STARTING'], ['upterm', 'STARTING'], ['web', 'READY']]);
    expect(shareRequests.filter((r) => r.sessionId === upterm.id)).toHaveLength(1);
    await api(hub.url, admin, 'POST', `/api/task-runs/${runId}/cancel`, {});
  });
});
