import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ManualClock, type LiveSession } from '@handoff/shared';
import { api, eventually } from '../support/clients.js';
import { advanceAndSweep } from '../support/clock.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { ScriptedWorker } from '../support/scripted-worker.js';
import { startWorker, type WorkerProcess } from '../support/worker.js';

// Time-driven transitions on the hub's injected clock, at their default durations (no TTL
// shortened through the environment, no sleeping for them): the sweeper ticks only when the
// test moves the clock. What the process decides (a grant's expiry, a sweep's cadence)
// follows the clock directly; deadlines the database judges (`expires_at <= now()`, the
// rule for conditional updates) are stamped from the clock, so a clock set in the past makes
// them fall due against the database's real time.
const MINUTE = 60_000;
const SWEEP = 500; // SWEEP_INTERVAL's default
// The real worker below heartbeats on real time, which these clocks outrun by minutes, and
// worker liveness is judged on the hub's clock: it would be declared lost (its shares, and
// the grants on them, ending) halfway through. Its loss is not what these tests are about
// (test/integration/worker-loss-clock.test.ts is, at the default durations).
const WORKER_KEPT = { WORKER_LOST_AFTER: '1h' };

describe('time-driven transitions on a controllable clock (default durations, milliseconds of test time)', () => {
  // 10 min (APPROVAL_TIMEOUT's default) and a second behind real time.
  const clock = new ManualClock(Date.now() - 10 * MINUTE - 1000);
  let hub: TestHub;
  let admin: string;
  let worker: WorkerProcess;
  let runId: string;

  /** Moves the hub's clock by `ms`, one sweep interval at a time, then waits for a sweep judging at the clock's time. */
  const advance = (ms: number) => advanceAndSweep(clock, ms, SWEEP, hub);

  beforeAll(async () => {
    hub = await startTestHub({ clock, env: WORKER_KEPT });
    admin = await hub.token('admin');
    worker = startWorker({ hubUrl: hub.url, token: await hub.workerToken(`clock-${randomBytes(3).toString('hex')}`) });
    runId = (await api(hub.url, admin, 'POST', '/api/task-runs', { command: { script: 'sleep 600' } })).body.id as string;
    await eventually('the run running with its web share', async () => {
      const run = (await api(hub.url, admin, 'GET', `/api/task-runs/${runId}`)).body;
      return run.status === 'running' && (run.sessions as LiveSession[] | undefined)?.some((s) => s.provider === 'web' && s.status === 'READY');
    });
  });
  afterAll(async () => {
    await api(hub.url, admin, 'POST', `/api/task-runs/${runId}/cancel`, {}).catch(() => undefined);
    await worker?.stop();
    await hub?.stop();
  });

  it('an unanswered approval expires as denied at the first sweep the clock fires, not before', async () => {
    const operator = await hub.token('operator');
    const asked = await api(hub.url, operator, 'POST', `/api/task-runs/${runId}/live-session`, { provider: 'tmate' });
    expect(asked.status).toBe(202);
    const approvalId = asked.body.error.details.approvalId as string;
    const status = async () => ((await api(hub.url, admin, 'GET', '/api/approvals')).body.approvals as { id: string; status: string }[]).find((a) => a.id === approvalId)?.status;
    // Its deadline (the clock + APPROVAL_TIMEOUT) is already behind the database's clock, but
    // the sweeper runs on the hub's clock: with the clock standing still, nothing sweeps.
    await new Promise((r) => setTimeout(r, 4 * SWEEP));
    expect(await status()).toBe('pending');
    await advance(SWEEP);
    expect(await eventually('the approval expired', async () => ((await status()) === 'expired' ? 'expired' : undefined), 5000)).toBe('expired');
  });

  it('a write grant lives its whole default TTL (15 min) on the clock, then ends at the next sweep', async () => {
    const operator = await hub.token('operator');
    const granted = await api(hub.url, operator, 'POST', `/api/task-runs/${runId}/live-session/grant-write`, {});
    expect(granted.status).toBe(200);
    const grantId = granted.body.grant.id as string;
    const grant = async () => ((await api(hub.url, admin, 'GET', `/api/task-runs/${runId}`)).body.writeGrants as { id: string; status: string }[]).find((g) => g.id === grantId);
    await advance(15 * MINUTE - 2 * SWEEP);
    expect((await grant())?.status).toBe('active');
    await advance(3 * SWEEP);
    await eventually('the grant expired', async () => ((await grant()) === undefined ? true : undefined), 5000);
    const [row] = await import('../../server/src/infra/db/orm.js').then(({ em }) =>
      em(hub.orm).execute<{ status: string; end_reason: string; ended_at: Date | string }[]>('select status, end_reason, ended_at from write_grants where id = ?', [grantId]));
    expect(row).toMatchObject({ status: 'expired' });
    // Ended at the clock's time, a quarter of an hour after it was granted (not at real time).
    expect(new Date(row!.ended_at).getTime()).toBeGreaterThanOrEqual(new Date(granted.body.grant.expiresAt as string).getTime());
  });
});

describe('a live share’s TTL and grace warning on a controllable clock (LIVE_SESSION_TTL 60 min, LIVE_GRACE 5 min: the defaults)', () => {
  // An hour and a minute behind real time: a share created now is already past its TTL by the database's clock.
  const clock = new ManualClock(Date.now() - 61 * MINUTE);
  let hub: TestHub;
  let admin: string;
  let worker: WorkerProcess;
  const runs: string[] = [];

  const advance = (ms: number) => advanceAndSweep(clock, ms, SWEEP, hub);
  const webShare = async (runId: string) =>
    ((await api(hub.url, admin, 'GET', `/api/task-runs/${runId}`)).body.sessions as LiveSession[]).find((s) => s.provider === 'web');
  const startRun = async () => {
    const runId = (await api(hub.url, admin, 'POST', '/api/task-runs', { command: { script: 'sleep 600' } })).body.id as string;
    runs.push(runId);
    await eventually('its web share ready', async () => (await webShare(runId))?.status === 'READY');
    return runId;
  };

  beforeAll(async () => {
    hub = await startTestHub({ clock, env: WORKER_KEPT });
    admin = await hub.token('admin');
    worker = startWorker({ hubUrl: hub.url, token: await hub.workerToken(`clock-ttl-${randomBytes(3).toString('hex')}`) });
  });
  afterAll(async () => {
    for (const runId of runs) await api(hub.url, admin, 'POST', `/api/task-runs/${runId}/cancel`, {}).catch(() => undefined);
    await worker?.stop();
    await hub?.stop();
  });

  it('a share whose TTL passed ends (ttl) at the next sweep; one inside its grace window is warned, not ended', async () => {
    const expired = await startRun();
    await new Promise((r) => setTimeout(r, 3 * SWEEP));
    expect((await webShare(expired))?.status).toBe('READY'); // the clock stood still: no sweep ran
    await advance(SWEEP);
    await eventually('the expired share ended by its TTL', async () => {
      const s = await webShare(expired);
      return s?.status === 'ENDED' && s.endReason === 'ttl';
    }, 5000);

    // Three minutes later on the clock: a new share has two minutes left (inside LIVE_GRACE).
    await advance(3 * MINUTE);
    const graced = await startRun();
    await advance(SWEEP);
    const { em } = await import('../../server/src/infra/db/orm.js');
    await eventually('the grace warning', async () =>
      (await em(hub.orm).execute<{ grace_warned_at: unknown }[]>(`select grace_warned_at from live_sessions where run_id = ? and provider = 'web'`, [graced]))[0]?.grace_warned_at ? true : undefined, 5000);
    expect((await webShare(graced))?.status).toBe('READY');
  });
});

describe('a share the worker never answers for, on a controllable clock (LIVE_PROVIDER_START_TIMEOUT 15 s: the default)', () => {
  // Ten minutes behind real time: a share created now is older than its start timeout by the
  // database's clock at once. Its `created_at` is the hub clock's time, and so is the cutoff
  // the sweeper judges it by: it fails only once the clock has moved past the timeout.
  const clock = new ManualClock(Date.now() - 10 * MINUTE);
  const START_TIMEOUT = 15_000;
  const MARGIN = 5000; // the sweeper's, on top of the worker's own start timeout
  let hub: TestHub;
  let admin: string;
  let worker: ScriptedWorker;
  let runId: string;

  /** Moves the clock by `ms`, one sweep interval at a time, then waits for a sweep judging at the clock's time. */
  const advance = (ms: number) => advanceAndSweep(clock, ms, SWEEP, hub);
  const tmateShare = async () => ((await api(hub.url, admin, 'GET', `/api/task-runs/${runId}`)).body.sessions as LiveSession[]).find((s) => s.provider === 'tmate');

  beforeAll(async () => {
    hub = await startTestHub({ clock, env: WORKER_KEPT });
    admin = await hub.token('admin');
    // A worker that takes the share request and then never reports the share ready or failed.
    worker = await ScriptedWorker.connect(hub.url, await hub.workerToken(`clock-share-${randomBytes(3).toString('hex')}`));
    worker.socket.on('share:start', (_share: unknown, ack: (a: unknown) => void) => ack({ ok: true, data: {} }));
    await worker.hello([], 2);
    runId = (await api(hub.url, admin, 'POST', '/api/task-runs', { command: { script: 'sleep 600' } })).body.id as string;
    await eventually('the run assigned to the worker', async () => worker.assigned.some((a) => a.runId === runId));
    expect((await worker.started(runId)).ok).toBe(true);
  });
  afterAll(async () => {
    await api(hub.url, admin, 'POST', `/api/task-runs/${runId}/cancel`, {}).catch(() => undefined);
    worker?.close();
    await hub?.stop();
  });

  it('stays STARTING through LIVE_PROVIDER_START_TIMEOUT + 5 s of clock time, then fails at the next sweep', async () => {
    const created = await api(hub.url, admin, 'POST', `/api/task-runs/${runId}/live-session`, { provider: 'tmate' });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    expect(created.body.session.status).toBe('STARTING');
    await advance(SWEEP);
    expect((await tmateShare())?.status).toBe('STARTING'); // long past its start by the database's clock, not by the hub's
    await advance(START_TIMEOUT + MARGIN - 2 * SWEEP);
    expect((await tmateShare())?.status).toBe('STARTING');
    await advance(2 * SWEEP);
    const failed = await tmateShare();
    expect(failed).toMatchObject({ status: 'ERROR', errorMessage: 'share did not start within 15s (no answer from the worker)' });
  });

  it('a share enabled on a run started without one long ago gets its whole start timeout from the enabling', async () => {
    const id = (await api(hub.url, admin, 'POST', '/api/task-runs', { command: { script: 'sleep 600' }, liveSession: false })).body.id as string;
    await eventually('the second run assigned', async () => worker.assigned.some((a) => a.runId === id));
    expect((await worker.started(id)).ok).toBe(true);
    await advance(10 * MINUTE); // the run's DISABLED session row is ten minutes old
    const share = async () => ((await api(hub.url, admin, 'GET', `/api/task-runs/${id}`)).body.sessions as LiveSession[]).find((s) => s.provider === 'tmate');
    expect((await api(hub.url, admin, 'POST', `/api/task-runs/${id}/live-session`, { provider: 'tmate' })).status).toBe(201);
    await advance(START_TIMEOUT + MARGIN - SWEEP);
    expect((await share())?.status).toBe('STARTING');
    await advance(2 * SWEEP);
    expect(await share()).toMatchObject({ status: 'ERROR', errorMessage: 'share did not start within 15s (no answer from the worker)' });
  });

  it('a share asked for on a queued run is not judged before a worker is asked to start it', async () => {
    // Both of the worker's slots are taken: the run waits in the queue.
    const id = (await api(hub.url, admin, 'POST', '/api/task-runs', { command: { script: 'sleep 600' } })).body.id as string;
    const share = async () => ((await api(hub.url, admin, 'GET', `/api/task-runs/${id}`)).body.sessions as LiveSession[]).find((s) => s.provider === 'tmate');
    expect((await api(hub.url, admin, 'POST', `/api/task-runs/${id}/live-session`, { provider: 'tmate' })).status).toBe(201);
    await advance(2 * (START_TIMEOUT + MARGIN));
    expect((await api(hub.url, admin, 'GET', `/api/task-runs/${id}`)).body.status).toBe('queued');
    expect((await share())?.status).toBe('STARTING');
    await api(hub.url, admin, 'POST', `/api/task-runs/${id}/cancel`, {});
  });
});
