import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LiveSession } from '@handoff/shared';
import { em } from '../../server/src/infra/db/orm.js';
import { api, emitAck, eventually, Viewer } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { startWorker, type WorkerProcess } from '../support/worker.js';

// A takeover locks the run, then creates its operator's grant; a grant-write by somebody else
// creates a grant, whose insert then touches the run (its revision). Both must serialize on
// one lock taken in one order — not deadlock (PostgreSQL would abort one of them after
// `deadlock_timeout` with an error the caller sees as a failure).
describe('write grants racing takeovers on one run', () => {
  let hub: TestHub;
  let worker: WorkerProcess;
  let alice: string;
  let bob: string;
  let admin: string;
  let runId: string;

  beforeAll(async () => {
    hub = await startTestHub();
    alice = await hub.token('operator');
    bob = await hub.token('operator');
    admin = await hub.token('admin');
    worker = startWorker({ hubUrl: hub.url, token: await hub.workerToken(`grant-race-${randomBytes(3).toString('hex')}`) });
    const viewer = await Viewer.connect(hub.url, alice);
    runId = (await api(hub.url, alice, 'POST', '/api/task-runs', { command: { script: 'sleep 600' } })).body.id as string;
    await emitAck(viewer.socket, 'run:subscribe', { runId });
    await viewer.untilStatus(runId, ['running']);
    viewer.close();
    await eventually('the web share READY', async () =>
      ((await api(hub.url, alice, 'GET', `/api/task-runs/${runId}/live-sessions`)).body.sessions as LiveSession[]).some((s) => s.provider === 'web' && s.status === 'READY'));
  });
  afterAll(async () => {
    await api(hub.url, alice, 'POST', `/api/task-runs/${runId}/cancel`, {}).catch(() => undefined);
    await worker?.stop();
    await hub?.stop();
  });

  it('takeover/hand-back rounds, grant/revoke rounds and an admin revoking every grant, all at once: every answer a success or a clear refusal, never a deadlock', async () => {
    const deadlocks = async () => Number((await em(hub.orm).execute<{ n: string }[]>('select deadlocks as n from pg_stat_database where datname = current_database()'))[0]!.n);
    const before = await deadlocks();
    const spans: { who: string; from: number; to: number }[] = [];
    const statuses: number[] = [];
    const call = async (who: string, token: string, path: string, body: unknown) => {
      const from = performance.now();
      const res = await api(hub.url, token, 'POST', `/api/task-runs/${runId}${path}`, body);
      spans.push({ who, from, to: performance.now() });
      statuses.push(res.status);
      return res;
    };
    await Promise.all([
      (async () => {
        for (let i = 0; i < 30; i++) {
          await call('takeover', alice, '/control', { action: 'takeover' });
          await call('takeover', alice, '/control', { action: 'handback', summary: `round ${i}` });
        }
      })(),
      (async () => {
        for (let i = 0; i < 30; i++) {
          await call('grant', bob, '/live-session/grant-write', { ttlMinutes: 5 });
          await call('grant', bob, '/live-session/revoke-write', {});
        }
      })(),
      // Ends whatever grants are live — the takeover's among them — while they are handed back.
      (async () => {
        for (let i = 0; i < 30; i++) await call('revoke-all', admin, '/live-session/revoke-write', {});
      })(),
    ]);
    // The race happened: calls of the two sides overlapped in time.
    const takeovers = spans.filter((s) => s.who === 'takeover');
    const overlapping = (who: string) => spans.filter((g) => g.who === who && takeovers.some((t) => t.from < g.to && g.from < t.to)).length;
    expect(overlapping('grant')).toBeGreaterThan(10);
    expect(overlapping('revoke-all')).toBeGreaterThan(10);
    expect(statuses.filter((s) => s >= 500)).toEqual([]);
    expect(await deadlocks()).toBe(before);
    const verify = await api(hub.url, alice, 'GET', `/api/task-runs/${runId}/events/verify`);
    expect(verify.body).toMatchObject({ ok: true });
  });
});
