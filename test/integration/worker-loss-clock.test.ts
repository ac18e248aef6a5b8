import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ManualClock, type AuditEvent, type LiveSession, type Run } from '@handoff/shared';
import { loadConfig } from '../../server/src/config.js';
import { em } from '../../server/src/infra/db/orm.js';
import { api, eventually } from '../support/clients.js';
import { advanceAndSweep } from '../support/clock.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { ScriptedWorker } from '../support/scripted-worker.js';

// Worker loss on the hub's injected clock, at the default durations (no WORKER_LOST_AFTER,
// WORKER_RECLAIM_GRACE, SWEEP_INTERVAL or HEARTBEAT_INTERVAL override): heartbeats are
// stamped, and silence judged, on that clock, so minutes of it pass in a few seconds of test
// time and every boundary is met to the millisecond. The worker is a scripted socket, so it
// beats exactly when the test says; the hub, its database and the protocol are real.
const defaults = loadConfig({});
const SWEEP = defaults.SWEEP_INTERVAL; // 500 ms
const LOST_AFTER = defaults.WORKER_LOST_AFTER; // 9 s
const GRACE = defaults.WORKER_RECLAIM_GRACE; // 60 s
const HEARTBEAT = defaults.HEARTBEAT_INTERVAL; // 3 s

describe('worker loss on a controllable clock (default durations, milliseconds of test time)', () => {
  const clock = new ManualClock(Date.now());
  let hub: TestHub;
  let operator: string;
  let admin: string;
  const workers: ScriptedWorker[] = [];
  const runs: string[] = [];

  /** Moves the clock to `at`, one sweep interval at a time, then waits for a sweep judging at exactly `at`. */
  const advanceTo = (at: number) => advanceAndSweep(clock, at - clock.now(), SWEEP, hub);
  const workerRow = async (name: string) =>
    (await em(hub.orm).execute<{ status: string; last_heartbeat_at: Date | string }[]>('select status, last_heartbeat_at from workers where name = ?', [name]))[0]!;
  const run = async (runId: string) => (await api(hub.url, admin, 'GET', `/api/task-runs/${runId}`)).body as Run;
  const webShares = async (runId: string) => (await run(runId)).sessions.filter((s: LiveSession) => s.provider === 'web');
  const auditActions = async (runId: string) =>
    ((await api(hub.url, admin, 'GET', `/api/task-runs/${runId}/events`)).body.events as AuditEvent[]).map((e) => e.action);

  /** A scripted worker (capacity 1) that said hello, was assigned a new run, started it and heartbeated: returns when that beat was heard (clock ms). */
  const workerWithRun = async (label: string) => {
    const name = `${label}-${randomBytes(3).toString('hex')}`;
    const worker = await ScriptedWorker.connect(hub.url, await hub.workerToken(name));
    workers.push(worker);
    await worker.hello([], 1);
    const created = await api(hub.url, operator, 'POST', '/api/task-runs', { command: { script: 'sleep 600' } });
    expect(created.status).toBe(201);
    const runId = created.body.id as string;
    runs.push(runId);
    await eventually('the run assigned to the worker', async () => worker.assigned.some((a) => a.runId === runId));
    expect((await worker.started(runId)).ok).toBe(true);
    await eventually('the run running with its web share', async () => (await run(runId)).status === 'running' && (await webShares(runId)).some((s) => s.status === 'READY'));
    expect((await worker.heartbeat(1)).ok).toBe(true);
    return { name, worker, runId, heardAt: clock.now() };
  };

  beforeAll(async () => {
    hub = await startTestHub({ clock });
    operator = await hub.token('operator');
    admin = await hub.token('admin');
    // The sweeper leads from here: silence is judged from the clock's start on.
    await hub.sweeper.tick();
  });
  afterAll(async () => {
    for (const runId of runs) await api(hub.url, admin, 'POST', `/api/task-runs/${runId}/cancel`, {}).catch(() => undefined);
    for (const w of workers) w.close();
    await hub?.stop();
  });

  it('a silent worker is online until WORKER_LOST_AFTER of clock time, lost past it (its run still running); a beat within the grace brings it back with its run', async () => {
    const t0 = performance.now();
    const { name, worker, runId, heardAt } = await workerWithRun('silent-back');

    await advanceTo(heardAt + LOST_AFTER - 1);
    expect((await workerRow(name)).status).toBe('online');
    expect((await run(runId)).status).toBe('running');
    expect((await webShares(runId)).map((s) => s.status)).toEqual(['READY']);

    await advanceTo(heardAt + LOST_AFTER + 1);
    expect((await workerRow(name)).status).toBe('lost');
    expect((await run(runId)).status).toBe('running');
    // Nobody can watch through a lost worker: its share went ERROR with it.
    await eventually('the web share ERROR (worker lost)', async () => (await webShares(runId)).some((s) => s.status === 'ERROR' && s.endReason === 'worker-lost'));

    // Still within the reclaim grace: the run waits for its worker.
    await advanceTo(heardAt + LOST_AFTER + GRACE - SWEEP);
    expect((await run(runId)).status).toBe('running');
    expect((await workerRow(name)).status).toBe('lost');

    // The worker beats again (same socket: it was frozen): written at once with the clock's time, its run reclaimed.
    const backAt = clock.now();
    expect((await worker.heartbeat(1)).ok).toBe(true);
    const back = await workerRow(name);
    expect(back.status).toBe('online');
    expect(new Date(back.last_heartbeat_at).getTime()).toBe(backAt);
    expect(await auditActions(runId)).toContain('run.reclaimed');

    // Past the old deadline (its first silence + WORKER_LOST_AFTER + WORKER_RECLAIM_GRACE), the run is still its own.
    await advanceTo(heardAt + LOST_AFTER + GRACE + SWEEP);
    expect((await workerRow(name)).status).toBe('online');
    expect((await run(runId)).status).toBe('running');
    expect(await auditActions(runId)).not.toContain('run.lost');
    await eventually('a fresh web share', async () => (await webShares(runId)).some((s) => s.status === 'READY'));

    // Done with it: its slot and its socket must not interfere with the next case.
    expect((await api(hub.url, admin, 'POST', `/api/task-runs/${runId}/cancel`, {})).status).toBe(200);
    worker.close();
    expect(performance.now() - t0).toBeLessThan(10_000);
  });

  it('past WORKER_LOST_AFTER + WORKER_RECLAIM_GRACE without a beat the run is lost, audited, and dated by the clock', async () => {
    const t0 = performance.now();
    const { name, runId, heardAt } = await workerWithRun('silent-gone');
    const deadline = heardAt + LOST_AFTER + GRACE;

    await advanceTo(heardAt + LOST_AFTER + 1);
    expect((await workerRow(name)).status).toBe('lost');
    await advanceTo(deadline - 1);
    expect((await run(runId)).status).toBe('running');
    expect(await auditActions(runId)).not.toContain('run.lost');

    await advanceTo(deadline + 1);
    const lost = await eventually('the run lost', async () => {
      const r = await run(runId);
      return r.status === 'lost' ? r : undefined;
    });
    expect(await auditActions(runId)).toContain('run.lost');
    // Dated by the hub's clock at the sweep that lost it — over a minute ahead of the database's own clock here.
    const endedAt = new Date(lost.endedAt!).getTime();
    expect(endedAt).toBeGreaterThan(deadline);
    expect(endedAt).toBeLessThanOrEqual(deadline + SWEEP);
    expect(endedAt).toBeLessThanOrEqual(clock.now());
    expect(performance.now() - t0).toBeLessThan(10_000);
  });

  it('a worker heartbeating once per HEARTBEAT_INTERVAL of clock time is never lost, across several times WORKER_LOST_AFTER', async () => {
    const t0 = performance.now();
    const { name, worker, runId } = await workerWithRun('steady');
    let lastBeat = clock.now();
    const until = clock.now() + 4 * LOST_AFTER;
    while (clock.now() < until) {
      await advanceTo(clock.now() + HEARTBEAT);
      // Judged at the very moment the beat is due: the previous one is HEARTBEAT old, far from WORKER_LOST_AFTER.
      expect((await workerRow(name)).status).toBe('online');
      lastBeat = clock.now();
      expect((await worker.heartbeat(1)).ok).toBe(true);
    }
    // Each beat was written with the time the hub heard it on its clock (the batched flush, every HEARTBEAT_FLUSH).
    await advanceTo(clock.now() + defaults.HEARTBEAT_FLUSH);
    await eventually('the last beat written', async () => new Date((await workerRow(name)).last_heartbeat_at).getTime() === lastBeat);
    expect((await workerRow(name)).status).toBe('online');
    expect((await run(runId)).status).toBe('running');
    expect((await webShares(runId)).map((s) => s.status)).toEqual(['READY']);
    expect(await auditActions(runId)).not.toContain('session.error');
    expect(performance.now() - t0).toBeLessThan(10_000);
  });
});
