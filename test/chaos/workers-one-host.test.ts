import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, emitAck, Viewer } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { expectNumberedLines, numberedLinesScript, recordedText } from '../support/recording.js';
import { startWorker, type WorkerProcess } from '../support/worker.js';

// Several workers of one OS user on one host, with default settings (no WORKER_RUN_DIR):
// each has its own run directory, so no start-up cleanup can touch a neighbour's run.
describe('chaos: two workers on one host', () => {
  let hub: TestHub;
  let operator: string;
  let viewer: Viewer;
  const workers: WorkerProcess[] = [];

  beforeAll(async () => {
    hub = await startTestHub();
    operator = await hub.token('operator');
    viewer = await Viewer.connect(hub.url, await hub.token('observer'));
  });
  afterAll(async () => {
    viewer?.close();
    for (const w of workers) await w.stop();
    await hub?.stop();
  });

  const until = async (w: WorkerProcess, text: string, ms = 15_000) => {
    const deadline = Date.now() + ms;
    while (!w.output().includes(text)) {
      if (Date.now() > deadline) throw new Error(`worker never logged ${text}: ${w.output().slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  it('neither touches the other’s runs, across starts and crashes; a second worker of the same identity is refused', async () => {
    const tokenA = await hub.workerToken(`host-a-${randomBytes(3).toString('hex')}`);
    const tokenB = await hub.workerToken(`host-b-${randomBytes(3).toString('hex')}`);
    const first = startWorker({ hubUrl: hub.url, token: tokenA, capacity: 1, runDir: null });
    workers.push(first);
    await until(first, 'worker connected');

    const n = 60;
    const created = await api(hub.url, operator, 'POST', '/api/task-runs', { command: { script: numberedLinesScript('nb', n, 0.08) } });
    const runId = created.body.id as string;
    await emitAck(viewer.socket, 'run:subscribe', { runId });
    await viewer.untilStatus(runId, ['running'], 20_000);

    // The neighbour starts (its start-up cleanup runs), takes a run, crashes and starts again.
    let second = startWorker({ hubUrl: hub.url, token: tokenB, capacity: 1, runDir: null });
    workers.push(second);
    await until(second, 'worker connected');
    expect(second.runDir).not.toBe(first.runDir);
    const other = await api(hub.url, operator, 'POST', '/api/task-runs', { command: { script: 'sleep 30' } });
    await emitAck(viewer.socket, 'run:subscribe', { runId: other.body.id });
    const otherRunning = await viewer.untilStatus(other.body.id, ['running'], 20_000);
    expect(otherRunning.workerId).not.toBe((await api(hub.url, operator, 'GET', `/api/task-runs/${runId}`)).body.workerId);
    await second.kill('SIGKILL');
    second = startWorker({ hubUrl: hub.url, token: tokenB, capacity: 1, runDir: null });
    workers.push(second);
    await until(second, 'worker connected');

    // Same identity twice on one host: refused with a clear message, nothing touched.
    const twin = startWorker({ hubUrl: hub.url, token: tokenA, capacity: 1, runDir: null });
    const code = await new Promise<number | null>((resolve) => twin.proc.once('exit', (c) => resolve(c)));
    expect(code).toBe(1);
    expect(twin.output()).toMatch(/another worker \(pid \d+\) is using the run directory/);

    const done = await viewer.untilStatus(runId, ['succeeded', 'failed', 'lost', 'cancelled'], 30_000);
    expect({ status: done.status, exitCode: done.exitCode }).toEqual({ status: 'succeeded', exitCode: 0 });
    expectNumberedLines(await recordedText(hub.url, operator, runId), 'nb', n);
    await api(hub.url, operator, 'POST', `/api/task-runs/${other.body.id}/cancel`, {});
  });
});
