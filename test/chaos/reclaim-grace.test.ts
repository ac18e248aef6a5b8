import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LiveSession } from '@handoff/shared';
import { em } from '../../server/src/infra/db/orm.js';
import { api, eventually } from '../support/clients.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { lineNumbers, numberedFrames, recordedText, ScriptedWorker } from '../support/scripted-worker.js';

const LOST_AFTER_MS = 1000;
const GRACE_MS = 1500;
const ENV = { WORKER_LOST_AFTER: `${LOST_AFTER_MS}ms`, WORKER_RECLAIM_GRACE: `${GRACE_MS}ms`, SWEEP_INTERVAL: '100ms', HEARTBEAT_INTERVAL: '300ms' };
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// Workers are scripted socket clients (exact control of when they are heard); hubs and
// PostgreSQL are real, and a hub "restart" is a new hub process-equivalent on the same database.
describe('chaos: the reclaim grace', () => {
  let db: TestDatabase;
  const hubs: TestHub[] = [];
  const workers: ScriptedWorker[] = [];

  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    for (const w of workers) w.close();
    for (const h of hubs) await h.stop().catch(() => {});
    await db?.drop();
  });

  const startHub = async () => {
    const hub = await startTestHub({ databaseUrl: db.url, env: ENV });
    hubs.push(hub);
    return hub;
  };
  const stopHub = async (hub: TestHub) => {
    hubs.splice(hubs.indexOf(hub), 1);
    await hub.stop();
  };
  const scripted = async (hub: TestHub, token: string) => {
    const w = await ScriptedWorker.connect(hub.url, token);
    workers.push(w);
    return w;
  };
  const startedRun = async (hub: TestHub, admin: string, w: ScriptedWorker) => {
    const runId = (await api(hub.url, admin, 'POST', '/api/task-runs', { command: { script: 'scripted' } })).body.id as string;
    await eventually('assigned', async () => w.assigned.some((r) => r.runId === runId));
    expect((await w.started(runId)).ok).toBe(true);
    return runId;
  };
  const getRun = async (hub: TestHub, admin: string, runId: string) => (await api(hub.url, admin, 'GET', `/api/task-runs/${runId}`)).body as { status: string; sessions: LiveSession[] };

  it('a worker that comes back on a new connection within the grace re-adopts its run (run.reclaimed), resends from the recorded lastSeq, and gets a fresh web share', async () => {
    const hub = await startHub();
    try {
      await comesBack(hub);
    } finally {
      await stopHub(hub); // its sweeper must not judge the next test's workers
    }
  });

  const comesBack = async (hub: TestHub) => {
    const admin = await hub.token('admin');
    const { worker, token } = await hub.auth.issueWorkerToken(`back-${randomBytes(3).toString('hex')}`);
    const w1 = await scripted(hub, token);
    await w1.hello();
    const runId = await startedRun(hub, admin, w1);
    expect(await w1.output(runId, numberedFrames(1, 10))).toMatchObject({ ok: true, data: { lastSeq: 10 } });
    w1.close(); // the worker dies with its connection (its run lives on, on its host)

    await eventually('worker lost', async () => ((await em(hub.orm).execute<{ status: string }[]>('select status from workers where id = ?', [worker.id]))[0]!).status === 'lost', LOST_AFTER_MS + 3000);
    await eventually('its web share ERROR', async () => (await getRun(hub, admin, runId)).sessions.some((s) => s.provider === 'web' && s.status === 'ERROR'));
    expect((await getRun(hub, admin, runId)).status).toBe('running');

    const w2 = await scripted(hub, token);
    expect(await w2.hello([runId])).toEqual([{ runId, keep: true, lastSeq: 10 }]);
    const events = (await api(hub.url, admin, 'GET', `/api/task-runs/${runId}/events?action=run.reclaimed`)).body.events;
    expect(events).toMatchObject([{ actorType: 'worker', metadata: { via: 'hello' } }]);
    const run = await getRun(hub, admin, runId);
    expect(run.status).toBe('running');
    expect(run.sessions.filter((s) => s.provider === 'web').map((s) => s.status).sort()).toEqual(['ERROR', 'READY']);
    expect(await w2.output(runId, numberedFrames(11, 20))).toMatchObject({ ok: true, data: { lastSeq: 20 } });
    // Past the grace (heartbeating as a live worker does) it stays: it was heard in time.
    const beat = setInterval(() => void w2.heartbeat().catch(() => {}), 300);
    await sleep(LOST_AFTER_MS + GRACE_MS);
    clearInterval(beat);
    expect((await w2.exited(runId, 0)).ok).toBe(true);
    expect((await getRun(hub, admin, runId)).status).toBe('succeeded');
    expect(lineNumbers(await recordedText(hub.url, admin, runId))).toEqual(range(1, 20));
    expect(w2.cancels).toEqual([]);
  };

  it('a hub restart never gets a healthy run killed: the new leader judges silence only from when it began to lead', async () => {
    const first = await startHub();
    const admin = await first.token('admin');
    const { worker, token } = await first.auth.issueWorkerToken(`restart-${randomBytes(3).toString('hex')}`);
    const w1 = await scripted(first, token);
    await w1.hello();
    const runId = await startedRun(first, admin, w1);

    // The only hub node goes down for longer than WORKER_LOST_AFTER + WORKER_RECLAIM_GRACE.
    await stopHub(first);
    await sleep(LOST_AFTER_MS + GRACE_MS + 500);
    const second = await startHub();
    const statusOf = async () => ((await em(second.orm).execute<{ status: string }[]>('select status from workers where id = ?', [worker.id]))[0]!).status;
    // The worker's last heartbeat is long past, but the new leader could not have heard it: nothing is declared lost yet.
    await sleep(LOST_AFTER_MS / 2);
    expect(await statusOf()).not.toBe('lost');
    expect((await getRun(second, admin, runId)).status).toBe('running');

    // The worker reconnects (its backoff took a moment) and keeps its run.
    const w2 = await scripted(second, token);
    expect(await w2.hello([runId])).toEqual([{ runId, keep: true, lastSeq: 0 }]);
    expect(await w2.output(runId, numberedFrames(1, 5))).toMatchObject({ ok: true, data: { lastSeq: 5 } });
    expect((await w2.exited(runId, 0)).ok).toBe(true);
    expect((await getRun(second, admin, runId)).status).toBe('succeeded');
    const lost = (await api(second.url, admin, 'GET', `/api/task-runs/${runId}/events?action=run.lost`)).body.events;
    expect(lost).toEqual([]);
  });
});
