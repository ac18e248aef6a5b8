import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, emitAck, eventually, Viewer } from '../support/clients.js';
import { createTestDatabase, REDIS_URL, type TestDatabase } from '../support/db.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { expectNumberedLines, numberedLinesScript, recordedText } from '../support/recording.js';
import { startWorker, type WorkerProcess } from '../support/worker.js';

// A worker given both hub nodes (HANDOFF_URL=a,b) moves to the surviving node at once when
// its node goes away, and its run goes on: nothing lost, nothing killed.
describe('chaos: the worker’s hub node goes away', () => {
  let db: TestDatabase;
  let a: TestHub;
  let b: TestHub;
  let worker: WorkerProcess;
  let operator: string;
  let viewerOnB: Viewer;

  beforeAll(async () => {
    db = await createTestDatabase();
    const env = { REDIS_KEY_PREFIX: `handoff-failover-${randomBytes(4).toString('hex')}`, HEARTBEAT_INTERVAL: '500ms', WORKER_LOST_AFTER: '3s' };
    a = await startTestHub({ databaseUrl: db.url, redisUrl: REDIS_URL, env });
    b = await startTestHub({ databaseUrl: db.url, redisUrl: REDIS_URL, env });
    operator = await b.token('operator');
    viewerOnB = await Viewer.connect(b.url, await b.token('observer'));
    // Node A first: the worker connects there.
    worker = startWorker({ hubUrl: `${a.url},${b.url}`, token: await a.workerToken(`failover-${randomBytes(3).toString('hex')}`) });
  });
  afterAll(async () => {
    viewerOnB?.close();
    await worker?.stop();
    await b?.stop();
    await db?.drop();
  });

  it('reconnects to the other node within a second; the run finishes with every line recorded once', async () => {
    const n = 80;
    const created = await api(b.url, operator, 'POST', '/api/task-runs', { command: { script: numberedLinesScript('fo', n, 0.05) } });
    expect(created.status).toBe(201);
    const runId = created.body.id as string;
    await emitAck(viewerOnB.socket, 'run:subscribe', { runId });
    await emitAck(viewerOnB.socket, 'term:subscribe', { runId });
    await viewerOnB.until('20 lines live', () => (viewerOnB.live.get(runId) ?? []).map((f) => f.data).join('').includes('fo-20'));
    const onA = await api(a.url, operator, 'GET', `/api/task-runs/${runId}`);
    expect(onA.body.status).toBe('running');

    const closedAt = Date.now();
    await a.stop(); // node A goes away (its sockets are closed)
    const back = await eventually('the worker online on node B', async () => {
      const sockets = await b.io.of('/worker').fetchSockets();
      return sockets.length > 0 ? Date.now() : undefined;
    }, 10_000);
    const took = back - closedAt;
    expect(took).toBeLessThan(1000);

    const done = await viewerOnB.untilStatus(runId, ['succeeded', 'failed', 'lost', 'cancelled'], 30_000);
    expect(done.status).toBe('succeeded');
    expect(done.exitCode).toBe(0);
    expectNumberedLines(await recordedText(b.url, operator, runId), 'fo', n);
    console.info(`failover: worker back on node B ${took} ms after node A closed`);
  });
});
