import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, emitAck, Viewer } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { expectNumberedLines, numberedLinesScript, recordedText } from '../support/recording.js';
import { startWorker, type WorkerProcess } from '../support/worker.js';

// The README's first command runs the hub on embedded PGlite: the statements that bind their
// values (recording inserts) and the claim that returns its row must work there as they do on
// PostgreSQL — a run scheduled, started, recorded frame for frame and finished.
describe('a run end to end on the embedded database (PGlite)', () => {
  let hub: TestHub;
  let worker: WorkerProcess;
  let operator: string;

  beforeAll(async () => {
    hub = await startTestHub({ driver: 'pglite' });
    operator = await hub.token('operator');
    worker = startWorker({ hubUrl: hub.url, token: await hub.workerToken(`embedded-${process.pid}`) });
  });
  afterAll(async () => {
    await worker?.stop();
    await hub?.stop();
  });

  it('is assigned, runs, is recorded line for line (quotes and backslashes included) and exits with its code', async () => {
    const viewer = await Viewer.connect(hub.url, operator);
    try {
      const script = `${numberedLinesScript('pg-lite', 200, 0)}; printf '%s\\n' "it's \\\\ \\"quoted\\" \\$1 ?"; exit 3`;
      const created = await api(hub.url, operator, 'POST', '/api/task-runs', { command: { script } });
      expect(created.status, JSON.stringify(created.body)).toBe(201);
      const runId = created.body.id as string;
      await emitAck(viewer.socket, 'run:subscribe', { runId });
      const ended = await viewer.untilStatus(runId, ['succeeded', 'failed', 'lost', 'cancelled'], 30_000);
      expect(ended.status).toBe('failed');
      expect(ended.exitCode).toBe(3);
      const text = await recordedText(hub.url, operator, runId);
      expectNumberedLines(text, 'pg-lite', 200);
      expect(text).toContain(`it's \\ "quoted" $1 ?`);
    } finally {
      viewer.close();
    }
  });
});
