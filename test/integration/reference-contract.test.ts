import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LiveSession, Run } from '@handoff/shared';
import { em } from '../../server/src/infra/db/orm.js';
import { api, connect, emitAck, eventually, Viewer } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { untilNoProcess } from '../support/processes.js';
import { startWorker, type WorkerProcess } from '../support/worker.js';

// STAND-INS: no tmate relay and no upterm server are reachable here, so the READY paths run
// against test/fixtures/fake-tmate and fake-upterm. The ERROR path uses the real tmate.
const FAKE_TMATE = path.resolve('test/fixtures/fake-tmate');
const FAKE_UPTERM = path.resolve('test/fixtures/fake-upterm');

type AuditRow = { action: string; sessionId: string | null; metadata: Record<string, unknown> };
const auditOf = async (hub: TestHub, token: string, runId: string) => (await api(hub.url, token, 'GET', `/api/task-runs/${runId}/events?limit=1000`)).body.events as AuditRow[];

async function startRun(hub: TestHub, token: string, viewer: Viewer, body: Record<string, unknown>): Promise<string> {
  const res = await api(hub.url, token, 'POST', '/api/task-runs', body);
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  await emitAck(viewer.socket, 'run:subscribe', { runId: res.body.id });
  return res.body.id as string;
}

describe('the reference contract: DISABLED, audit fields, limits (default provider web)', () => {
  let hub: TestHub;
  let worker: WorkerProcess;
  let admin: string;
  let operator: string;
  let viewer: Viewer;
  const sessions = new Map<string, LiveSession>();

  beforeAll(async () => {
    hub = await startTestHub({ env: { LIVE_PROVIDER_START_TIMEOUT: '3s', SWEEP_INTERVAL: '100ms' } });
    admin = await hub.token('admin');
    operator = await hub.token('operator');
    viewer = await Viewer.connect(hub.url, admin);
    viewer.socket.on('session:updated', (s: LiveSession) => sessions.set(s.id, s));
    worker = startWorker({ hubUrl: hub.url, token: await hub.workerToken(`ref-${randomBytes(3).toString('hex')}`), capacity: 4, env: { TMATE_BIN: FAKE_TMATE, UPTERM_BIN: FAKE_UPTERM } });
  });
  afterAll(async () => {
    viewer?.close();
    await worker?.stop();
    await hub?.stop();
  });
  const until = (id: string, status: string, ms = 8000) => viewer.until(`session ${id} ${status}`, () => (sessions.get(id)?.status === status ? sessions.get(id) : undefined), ms);

  it('a run with liveSession:false reads DISABLED on both GET routes and the socket; enabling it goes STARTING → READY', async () => {
    const runId = await startRun(hub, operator, viewer, { command: { script: 'while true; do echo tick; sleep 0.2; done' }, liveSession: false });
    const running = await viewer.untilStatus(runId, ['running'], 20_000);
    expect(running.sessions.map((s) => s.status)).toEqual(['DISABLED']);
    const one = await api(hub.url, operator, 'GET', `/api/task-runs/${runId}/live-session`);
    expect(one.status).toBe(200);
    expect(one.body.session).toMatchObject({ status: 'DISABLED', provider: 'web', readyAt: null, endedAt: null });
    const all = await api(hub.url, operator, 'GET', `/api/task-runs/${runId}/live-sessions`);
    expect(all.body.sessions.map((s: LiveSession) => s.status)).toEqual(['DISABLED']);
    const sub = await emitAck<{ run: Run }>(viewer.socket, 'run:subscribe', { runId });
    expect(sub.ok && sub.data.run.sessions.map((s) => s.status)).toEqual(['DISABLED']);
    // Live viewing is off: the terminal refuses viewers with a clear reason.
    const refused = await emitAck(viewer.socket, 'term:subscribe', { runId });
    expect(refused).toMatchObject({ ok: false, error: { code: 'FORBIDDEN', message: `run ${runId} has live viewing disabled` } });

    const enabled = await api(hub.url, operator, 'POST', `/api/task-runs/${runId}/live-session`, {});
    expect(enabled.status, JSON.stringify(enabled.body)).toBe(201);
    expect(enabled.body.session.id).toBe(one.body.session.id); // the same session leaves DISABLED
    await until(one.body.session.id, 'READY');
    expect((await emitAck(viewer.socket, 'term:subscribe', { runId })).ok).toBe(true);
    const rows = await auditOf(hub, admin, runId);
    const mine = rows.filter((r) => r.sessionId === one.body.session.id).map((r) => [r.action, r.metadata.enabled ?? null]);
    expect(mine).toEqual([['session.disabled', null], ['session.create', true], ['session.ready', null]]);
    await api(hub.url, operator, 'POST', `/api/task-runs/${runId}/cancel`, {});
  });

  it('extend records the old and new expiry, revoke the viewers it cut off, the end the session’s length', async () => {
    const runId = await startRun(hub, operator, viewer, { command: { script: 'while true; do echo tick; sleep 0.2; done' } });
    await viewer.untilStatus(runId, ['running'], 20_000);
    const web = (await api(hub.url, operator, 'GET', `/api/task-runs/${runId}/live-session`)).body.session as LiveSession;
    await until(web.id, 'READY');
    const extended = await api(hub.url, operator, 'POST', `/api/task-runs/${runId}/live-session/extend`, { ttlMinutes: 90 });
    expect(extended.status).toBe(200);

    // Two viewers watch the terminal (the test's own viewer is not subscribed to it).
    const watchers = await Promise.all([operator, admin].map((t) => connect(hub.url, '/dashboard', t)));
    for (const w of watchers) expect((await emitAck(w, 'term:subscribe', { runId })).ok).toBe(true);
    const revoked = await api(hub.url, operator, 'POST', `/api/task-runs/${runId}/live-session/revoke`, { provider: 'web', reason: 'incident' });
    expect(revoked.status).toBe(200);
    for (const w of watchers) w.close();

    const rows = await auditOf(hub, admin, runId);
    const extend = rows.find((r) => r.action === 'session.extend')!;
    expect(extend.metadata.previousExpiresAt).toBe(web.expiresAt);
    expect(extend.metadata.expiresAt).toBe(extended.body.session.expiresAt);
    expect(Date.parse(extend.metadata.expiresAt as string) - Date.parse(extend.metadata.previousExpiresAt as string)).toBeGreaterThan(25 * 60_000);
    const revoke = rows.find((r) => r.action === 'session.revoke')!;
    expect(revoke.metadata).toMatchObject({ participantsCut: 2, reason: 'incident', provider: 'web' });
    const lived = Date.parse(revoked.body.session.endedAt) - Date.parse(web.createdAt);
    expect(revoke.metadata.durationMs).toBe(lived);
    expect(revoke.metadata.readyDurationMs).toBe(Date.parse(revoked.body.session.endedAt) - Date.parse((sessions.get(web.id) ?? web).readyAt!));

    // A normal end (the run finishes) says how long the share lived too.
    const tm = await api(hub.url, admin, 'POST', `/api/task-runs/${runId}/live-session`, { provider: 'tmate' });
    await until(tm.body.session.id, 'READY');
    await api(hub.url, operator, 'POST', `/api/task-runs/${runId}/cancel`, {});
    const ended = await until(tm.body.session.id, 'ENDED');
    const end = (await auditOf(hub, admin, runId)).find((r) => r.action === 'session.end' && r.sessionId === ended.id)!;
    expect(end.metadata.durationMs).toBe(Date.parse(ended.endedAt!) - Date.parse(ended.createdAt));
  });

  it('tmate and upterm run side by side with web (3 = LIVE_MAX_SHARES_PER_RUN); asking again is the same share; `switch` ends the other', async () => {
    const runId = await startRun(hub, operator, viewer, { command: { script: 'while true; do echo tick; sleep 0.2; done' } });
    await viewer.untilStatus(runId, ['running'], 20_000);
    const tm = (await api(hub.url, admin, 'POST', `/api/task-runs/${runId}/live-session`, { provider: 'tmate' })).body.session as LiveSession;
    const up = (await api(hub.url, admin, 'POST', `/api/task-runs/${runId}/live-session`, { provider: 'upterm' })).body.session as LiveSession;
    await until(tm.id, 'READY');
    await until(up.id, 'READY');
    const listed = (await api(hub.url, admin, 'GET', `/api/task-runs/${runId}/live-sessions`)).body.sessions as LiveSession[];
    expect(listed.filter((s) => s.status === 'READY').map((s) => s.provider).sort()).toEqual(['tmate', 'upterm', 'web']);
    // Asking again for an active provider is the same session (idempotent), not a fourth share.
    const again = await api(hub.url, admin, 'POST', `/api/task-runs/${runId}/live-session`, { provider: 'tmate' });
    expect({ status: again.status, id: again.body.session.id }).toEqual({ status: 200, id: tm.id });
    const switched = await api(hub.url, admin, 'POST', `/api/task-runs/${runId}/live-session`, { provider: 'upterm', switch: true });
    expect(switched.body.session.id).toBe(up.id); // upterm is active: nothing to switch
    await api(hub.url, admin, 'POST', `/api/task-runs/${runId}/live-session/revoke`, { provider: 'upterm' });
    const back = (await api(hub.url, admin, 'POST', `/api/task-runs/${runId}/live-session`, { provider: 'upterm', switch: true })).body.session as LiveSession;
    expect((await until(tm.id, 'ENDED')).endReason).toBe('switched');
    await until(back.id, 'READY');
    await api(hub.url, operator, 'POST', `/api/task-runs/${runId}/cancel`, {});
  });
});

describe('the reference contract: LIVE_SESSION_PROVIDER=tmate starts a tmate share with every run', () => {
  it('unreachable relay: STARTING → ERROR within LIVE_PROVIDER_START_TIMEOUT, the run finishes normally; with the stand-in it goes READY and shows its RO endpoint', async () => {
    const env = { LIVE_SESSION_PROVIDER: 'tmate', LIVE_PROVIDER_START_TIMEOUT: '3s', SWEEP_INTERVAL: '100ms', LIVE_RELAY_HOST: '127.0.0.1', LIVE_RELAY_PORT: '9' };
    const hub = await startTestHub({ env });
    const operator = await hub.token('operator');
    const admin = await hub.token('admin');
    const viewer = await Viewer.connect(hub.url, operator);
    const sessions = new Map<string, LiveSession>();
    viewer.socket.on('session:updated', (s: LiveSession) => sessions.set(s.id, s));
    // The real tmate: nothing listens on port 9, so it can never reach the relay.
    const real = startWorker({ hubUrl: hub.url, token: await hub.workerToken(`ref-tmate-${randomBytes(3).toString('hex')}`) });
    try {
      const runId = await startRun(hub, operator, viewer, { command: { script: 'echo start; sleep 5; echo done; exit 3' } });
      const tmate = await viewer.until('a tmate share', () => [...sessions.values()].find((s) => s.runId === runId && s.provider === 'tmate'), 20_000);
      expect(tmate.status).toBe('STARTING');
      const failed = await viewer.until('tmate ERROR', () => (sessions.get(tmate.id)?.status === 'ERROR' ? sessions.get(tmate.id) : undefined), 10_000);
      expect(Date.parse(failed.endedAt!) - Date.parse(failed.createdAt)).toBeLessThan(3000 + 2000);
      expect(failed.errorMessage).toBeTruthy();
      const done = await viewer.untilStatus(runId, ['succeeded', 'failed'], 20_000);
      expect({ status: done.status, exitCode: done.exitCode }).toEqual({ status: 'failed', exitCode: 3 });
      expect([...sessions.values()].filter((s) => s.runId === runId).map((s) => s.provider).sort()).toEqual(['tmate', 'web']);
      const audit = await auditOf(hub, admin, runId);
      expect(audit.find((r) => r.action === 'session.create' && r.metadata.provider === 'tmate')).toMatchObject({ metadata: { provider: 'tmate' } });
    } finally {
      await real.stop();
    }

    const stand = startWorker({ hubUrl: hub.url, token: await hub.workerToken(`ref-fake-${randomBytes(3).toString('hex')}`), env: { TMATE_BIN: FAKE_TMATE } });
    try {
      const runId = await startRun(hub, operator, viewer, { command: { script: 'while true; do echo tick; sleep 0.2; done' } });
      const tmate = await viewer.until('a tmate share', () => [...sessions.values()].find((s) => s.runId === runId && s.provider === 'tmate'), 20_000);
      const ready = await viewer.until('tmate READY', () => (sessions.get(tmate.id)?.status === 'READY' ? sessions.get(tmate.id) : undefined), 10_000);
      expect(Object.values(ready.attachRo ?? {}).join(' ')).toMatch(/ssh /);
      const run = await eventually('the run shows it', async () => {
        const r = (await api(hub.url, operator, 'GET', `/api/task-runs/${runId}`)).body as Run;
        return r.sessions.some((s) => s.provider === 'tmate' && s.status === 'READY' && s.attachRo) ? r : undefined;
      });
      expect(run.sessions.find((s) => s.provider === 'tmate')!.attachRo).toEqual(ready.attachRo);
      await api(hub.url, operator, 'POST', `/api/task-runs/${runId}/cancel`, {});
    } finally {
      await stand.stop();
      viewer.close();
      await hub.stop();
    }
  });

  it('the limit: a share beyond LIVE_MAX_SHARES_PER_RUN answers LIMIT_REACHED and changes nothing', async () => {
    const hub = await startTestHub({ env: { LIVE_MAX_SHARES_PER_RUN: '2' } });
    const admin = await hub.token('admin');
    const viewer = await Viewer.connect(hub.url, admin);
    const w = startWorker({ hubUrl: hub.url, token: await hub.workerToken(`ref-lim-${randomBytes(3).toString('hex')}`), env: { TMATE_BIN: FAKE_TMATE, UPTERM_BIN: FAKE_UPTERM } });
    try {
      const runId = await startRun(hub, admin, viewer, { command: { script: 'while true; do echo tick; sleep 0.2; done' } });
      await viewer.untilStatus(runId, ['running'], 20_000);
      expect((await api(hub.url, admin, 'POST', `/api/task-runs/${runId}/live-session`, { provider: 'tmate' })).status).toBe(201);
      const before = (await api(hub.url, admin, 'GET', `/api/task-runs/${runId}/live-sessions`)).body.sessions as LiveSession[];
      const third = await api(hub.url, admin, 'POST', `/api/task-runs/${runId}/live-session`, { provider: 'upterm' });
      expect(third.status).toBe(409);
      expect(third.body.error.code).toBe('LIMIT_REACHED');
      expect(third.body.error.message).toMatch(/LIVE_MAX_SHARES_PER_RUN=2/);
      const after = (await api(hub.url, admin, 'GET', `/api/task-runs/${runId}/live-sessions`)).body.sessions as LiveSession[];
      expect(after.map((s) => [s.id, s.provider])).toEqual(before.map((s) => [s.id, s.provider]));
      await api(hub.url, admin, 'POST', `/api/task-runs/${runId}/cancel`, {});
    } finally {
      await w.stop();
      viewer.close();
      await hub.stop();
    }
  });
});

describe('the reference contract: stale sessions of a lost worker are resolved within 10 s of its last heartbeat (default settings)', () => {
  it('SIGKILL of the worker: its shares go ERROR within 10 s of its last heartbeat', async () => {
    const hub = await startTestHub(); // HEARTBEAT_INTERVAL, WORKER_LOST_AFTER and SWEEP_INTERVAL at their defaults
    const operator = await hub.token('operator');
    const viewer = await Viewer.connect(hub.url, operator);
    const sessions = new Map<string, LiveSession>();
    viewer.socket.on('session:updated', (s: LiveSession) => sessions.set(s.id, s));
    const token = await hub.workerToken(`ref-loss-${randomBytes(3).toString('hex')}`);
    const w = startWorker({ hubUrl: hub.url, token });
    try {
      const runId = await startRun(hub, operator, viewer, { command: { script: 'while true; do echo tick; sleep 0.2; done' } });
      const web = await viewer.until('web READY', () => [...sessions.values()].find((s) => s.runId === runId && s.status === 'READY'), 20_000);
      await w.kill('SIGKILL');
      const errored = await viewer.until('web ERROR', () => (sessions.get(web.id)?.status === 'ERROR' ? sessions.get(web.id) : undefined), 15_000);
      const [worker] = await em(hub.orm).execute<{ last: Date }[]>('select last_heartbeat_at as last from workers where id = ?', [errored.workerId]);
      const afterLastBeat = Date.parse(errored.endedAt!) - new Date(worker!.last).getTime();
      expect(afterLastBeat).toBeGreaterThan(8000); // not before three heartbeats were missed: no false positive
      expect(afterLastBeat).toBeLessThan(10_000);
      expect((await api(hub.url, operator, 'POST', `/api/task-runs/${runId}/cancel`, {})).status).toBe(200);
      // The crashed worker's run is still going: its watchdog waits out the abandon threshold.
      // The worker back on the host is told the run was cancelled and ends it: nothing is left
      // behind the test.
      const back = startWorker({ hubUrl: hub.url, token, runDir: w.runDir });
      try {
        expect(await untilNoProcess(w.runDir, 20_000)).toEqual([]);
      } finally {
        await back.stop();
      }
    } finally {
      await w.stop();
      viewer.close();
      await hub.stop();
    }
  });
});
