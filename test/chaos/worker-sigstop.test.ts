import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { em } from '../../server/src/infra/db/orm.js';
import { api, eventually, Viewer } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { untilNoProcess } from '../support/processes.js';
import { lineNumbers, recordedText } from '../support/scripted-worker.js';
import { startWorker, type WorkerProcess } from '../support/worker.js';

const LOST_AFTER_MS = 1500;
const GRACE_MS = 2500;
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// A real worker process frozen with SIGSTOP (its socket stays up) and continued with SIGCONT.
describe('chaos: a real worker frozen (SIGSTOP) and continued (SIGCONT)', () => {
  let hub: TestHub;
  let admin: string;
  let viewer: Viewer;
  let worker: WorkerProcess;
  let workerId: string;

  beforeAll(async () => {
    hub = await startTestHub({ env: { WORKER_LOST_AFTER: `${LOST_AFTER_MS}ms`, WORKER_RECLAIM_GRACE: `${GRACE_MS}ms`, SWEEP_INTERVAL: '100ms', HEARTBEAT_INTERVAL: '300ms' } });
    admin = await hub.token('admin');
    viewer = await Viewer.connect(hub.url, admin);
    const issued = await hub.auth.issueWorkerToken(`sigstop-${randomBytes(3).toString('hex')}`);
    workerId = issued.worker.id;
    worker = startWorker({ hubUrl: hub.url, token: issued.token });
  });
  afterAll(async () => {
    if (worker?.proc.pid) process.kill(worker.proc.pid, 'SIGCONT');
    await worker?.stop();
    viewer?.close();
    await hub?.stop();
  });

  const workerStatus = async () => ((await em(hub.orm).execute<{ status: string }[]>('select status from workers where id = ?', [workerId]))[0]!).status;

  it('frozen past WORKER_LOST_AFTER, continued within the grace: the run is reclaimed and its recording has every line once', async () => {
    const n = 120;
    const runId = (await api(hub.url, admin, 'POST', '/api/task-runs', { command: { script: `i=1; while [ $i -le ${n} ]; do echo "line $i"; i=$((i+1)); sleep 0.05; done` } })).body.id as string;
    await viewer.untilStatus(runId, ['running'], 20_000);
    await sleep(500);
    process.kill(worker.proc.pid!, 'SIGSTOP');
    try {
      await eventually('worker lost', async () => (await workerStatus()) === 'lost', LOST_AFTER_MS + 3000);
      expect((await api(hub.url, admin, 'GET', `/api/task-runs/${runId}`)).body.status).toBe('running');
    } finally {
      process.kill(worker.proc.pid!, 'SIGCONT');
    }
    const done = await viewer.untilStatus(runId, ['succeeded', 'failed', 'lost', 'cancelled'], 30_000);
    expect(done).toMatchObject({ status: 'succeeded', exitCode: 0 });
    const reclaimed = (await api(hub.url, admin, 'GET', `/api/task-runs/${runId}/events?action=run.reclaimed`)).body.events;
    expect(reclaimed).toMatchObject([{ metadata: { via: 'heartbeat' } }]);
    expect(lineNumbers((await recordedText(hub.url, admin, runId)).replace(/\r\n/g, '\n'))).toEqual(range(1, n));
    expect(await workerStatus()).toBe('online');
  });

  it('frozen past WORKER_LOST_AFTER + WORKER_RECLAIM_GRACE: the run is lost, and once continued the worker stops it (no process left)', async () => {
    const marker = `handoff-sigstop-${randomBytes(4).toString('hex')}`;
    const runId = (await api(hub.url, admin, 'POST', '/api/task-runs', { command: { script: `sh -c 'sleep 900; : ${marker}' & while true; do echo alive; sleep 0.2; done` } })).body.id as string;
    await viewer.untilStatus(runId, ['running'], 20_000);
    process.kill(worker.proc.pid!, 'SIGSTOP');
    let lostRun;
    try {
      lostRun = await viewer.untilStatus(runId, ['lost'], LOST_AFTER_MS + GRACE_MS + 5000);
    } finally {
      process.kill(worker.proc.pid!, 'SIGCONT');
    }
    expect(lostRun.errorMessage).toMatch(/WORKER_RECLAIM_GRACE/);
    // The run:cancel pushed at the loss (or again on its refused output) stops it on the host.
    expect(await untilNoProcess(marker, 15_000)).toEqual([]);
    await sleep(500);
    expect((await api(hub.url, admin, 'GET', `/api/task-runs/${runId}`)).body.status).toBe('lost');
    const lostRows = (await api(hub.url, admin, 'GET', `/api/task-runs/${runId}/events?action=run.lost`)).body.events;
    expect(lostRows).toMatchObject([{ metadata: { reason: 'reclaim-grace-passed' } }]);
  });
});
