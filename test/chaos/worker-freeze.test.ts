import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LiveSession } from '@handoff/shared';
import { em } from '../../server/src/infra/db/orm.js';
import { api, emitAck, eventually, Viewer } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { lineNumbers, numberedFrames, recordedText, ScriptedWorker } from '../support/scripted-worker.js';

const LOST_AFTER_MS = 1000;
const GRACE_MS = 2000;
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

// A frozen worker (SIGSTOP) keeps its socket: the kernel and socket.io's pings hold it up
// while the process says nothing. A scripted worker plays that exactly: connected, silent.
describe('chaos: a worker frozen with its socket up (reclaim grace)', () => {
  let hub: TestHub;
  let admin: string;

  beforeAll(async () => {
    hub = await startTestHub({ env: { WORKER_LOST_AFTER: `${LOST_AFTER_MS}ms`, WORKER_RECLAIM_GRACE: `${GRACE_MS}ms`, SWEEP_INTERVAL: '100ms', HEARTBEAT_INTERVAL: '300ms' } });
    admin = await hub.token('admin');
  });
  afterAll(async () => {
    await hub?.stop();
  });

  const workerStatus = async (id: string) => ((await em(hub.orm).execute<{ status: string }[]>('select status from workers where id = ?', [id]))[0]!).status;
  const getRun = async (runId: string) => (await api(hub.url, admin, 'GET', `/api/task-runs/${runId}`)).body as { status: string; sessions: LiveSession[] };
  const events = async (runId: string, action: string) => (await api(hub.url, admin, 'GET', `/api/task-runs/${runId}/events?action=${action}`)).body.events as Array<{ metadata: Record<string, unknown> }>;
  /** Heartbeats every 300 ms until stopped, like a live worker. */
  const beating = (w: ScriptedWorker) => {
    const timer = setInterval(() => void w.heartbeat().catch(() => {}), 300);
    return () => clearInterval(timer);
  };

  it('silent past WORKER_LOST_AFTER but heard within the grace: its run is reclaimed and still recorded; silent past the grace: the run is lost, its output refused, and it is told to stop', async () => {
    const { worker: row, token } = await hub.auth.issueWorkerToken(`frozen-${randomBytes(3).toString('hex')}`);
    const w = await ScriptedWorker.connect(hub.url, token);
    const closers: Array<() => void> = [];
    try {
      await w.hello();
      let stopBeating = beating(w);
      const runId = (await api(hub.url, admin, 'POST', '/api/task-runs', { command: { script: 'scripted' } })).body.id as string;
      const viewer = await Viewer.connect(hub.url, admin);
      closers.push(() => viewer.close());
      await eventually('assigned', async () => w.assigned.some((r) => r.runId === runId));
      expect((await emitAck(viewer.socket, 'term:subscribe', { runId })).ok).toBe(true);
      expect((await w.started(runId)).ok).toBe(true);
      expect(await w.output(runId, numberedFrames(1, 10))).toMatchObject({ ok: true, data: { lastSeq: 10 } });
      const firstWeb = await eventually('web share READY', async () => (await getRun(runId)).sessions.find((s) => s.provider === 'web' && s.status === 'READY'));

      // Frozen: no heartbeat (the socket stays up). Past WORKER_LOST_AFTER the worker is lost and its share goes ERROR…
      stopBeating();
      await eventually('worker lost', async () => (await workerStatus(row.id)) === 'lost', LOST_AFTER_MS + 3000);
      await eventually('web share ERROR', async () => (await getRun(runId)).sessions.find((s) => s.id === firstWeb.id && s.status === 'ERROR'));
      // …but the run waits for it.
      expect((await getRun(runId)).status).toBe('running');

      // It wakes up within the grace: heard on the same socket.
      expect((await w.heartbeat()).ok).toBe(true);
      stopBeating = beating(w);
      expect(await workerStatus(row.id)).toBe('online');
      expect(await events(runId, 'run.reclaimed')).toMatchObject([{ metadata: { via: 'heartbeat' } }]);
      const run = await getRun(runId);
      expect(run.status).toBe('running');
      // A fresh web share replaces the one that went ERROR with the worker.
      expect(run.sessions.filter((s) => s.provider === 'web' && s.status === 'READY').map((s) => s.id)).not.toContain(firstWeb.id);
      expect(run.sessions.some((s) => s.provider === 'web' && s.status === 'READY')).toBe(true);
      expect(await w.output(runId, numberedFrames(11, 20))).toMatchObject({ ok: true, data: { lastSeq: 20 } });
      expect(w.cancels).toEqual([]);

      // Frozen again, now past WORKER_LOST_AFTER + WORKER_RECLAIM_GRACE.
      stopBeating();
      const frozenAt = Date.now();
      await eventually('run lost', async () => (await getRun(runId)).status === 'lost', LOST_AFTER_MS + GRACE_MS + 3000);
      expect(Date.now() - frozenAt).toBeGreaterThanOrEqual(LOST_AFTER_MS + GRACE_MS - 300);
      expect(await events(runId, 'run.lost')).toMatchObject([{ metadata: { reason: 'reclaim-grace-passed', workerId: row.id } }]);
      // The hub tells it to stop the run (it may be alive somewhere)…
      await eventually('run:cancel pushed', async () => w.cancels.includes(runId));
      // …and when it wakes up, its output is refused and not recorded, and it is told again.
      expect((await w.heartbeat()).ok).toBe(true);
      expect(await w.output(runId, numberedFrames(21, 30))).toMatchObject({ ok: false, error: { code: 'FORBIDDEN' } });
      await eventually('run:cancel again', async () => w.cancels.filter((id) => id === runId).length >= 2);
      expect((await getRun(runId)).status).toBe('lost');
      expect(lineNumbers(await recordedText(hub.url, admin, runId))).toEqual(range(1, 20));
      const forbidden = await events(runId, 'worker.forbidden');
      expect(forbidden).toMatchObject([{ metadata: { attempted: 'run:output', status: 'lost' } }]);
      // Viewers saw what was recorded, and nothing of the refused output.
      expect(Math.max(...(viewer.live.get(runId) ?? []).map((f) => f.seq))).toBe(20);
    } finally {
      w.close();
      for (const close of closers) close();
    }
  });
});
