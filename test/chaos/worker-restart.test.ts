import { randomBytes } from 'node:crypto';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { api, emitAck, eventually, Viewer } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { pidsMatching, untilNoProcess } from '../support/processes.js';
import { startWorker, type WorkerProcess } from '../support/worker.js';

const cleanups: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setUp(env: Record<string, string>) {
  const hub: TestHub = await startTestHub({ env: { HEARTBEAT_INTERVAL: '300ms', SWEEP_INTERVAL: '100ms', ...env } });
  cleanups.push(() => hub.stop());
  const operator = await hub.token('operator');
  const viewer = await Viewer.connect(hub.url, await hub.token('observer'));
  cleanups.push(() => viewer.close());
  const token = await hub.workerToken(`restart-${randomBytes(3).toString('hex')}`);
  return { hub, operator, viewer, token };
}

function worker(hubUrl: string, token: string, runDir?: string): WorkerProcess {
  const w = startWorker({ hubUrl, token, runDir });
  cleanups.push(() => w.kill('SIGKILL'));
  return w;
}

/** The recording as asciicast v2 text output, with the terminal's CRLF undone. */
async function recording(hubUrl: string, token: string, runId: string): Promise<string> {
  const res = await fetch(`${hubUrl}/api/task-runs/${runId}/recording.cast`, { headers: { authorization: `Bearer ${token}` } });
  expect(res.status).toBe(200);
  const [, ...events] = (await res.text()).trim().split('\n').map((l) => JSON.parse(l) as [number, string, string]);
  return events.map((e) => e[2]).join('').replaceAll('\r\n', '\n');
}

describe('chaos: a worker is SIGKILLed mid-run', () => {
  it('restarted within WORKER_RECLAIM_GRACE, it re-adopts its live run: real exit code, every line once and in order in the recording', async () => {
    const { hub, operator, viewer, token } = await setUp({ WORKER_LOST_AFTER: '1s', WORKER_RECLAIM_GRACE: '20s' });
    const marker = `restart-${randomBytes(4).toString('hex')}`;
    const lines = 300;
    const first = worker(hub.url, token);
    cleanups.push(() => rmSync(first.runDir, { recursive: true, force: true }));
    const created = await api(hub.url, operator, 'POST', '/api/task-runs', {
      command: { script: `i=0; while [ $i -lt ${lines} ]; do i=$((i+1)); echo "${marker} line $i"; sleep 0.02; done` },
    });
    const runId = created.body.id as string;
    await emitAck(viewer.socket, 'run:subscribe', { runId });
    await emitAck(viewer.socket, 'term:subscribe', { runId });
    await viewer.untilStatus(runId, ['running'], 20_000);
    await viewer.until('some output live', () => (viewer.live.get(runId)?.length ?? 0) > 3, 20_000);

    await first.kill('SIGKILL');
    const killedAt = Date.now();
    expect(pidsMatching(marker).length).toBeGreaterThan(0); // the run goes on without its worker
    await new Promise((r) => setTimeout(r, 1500)); // past WORKER_LOST_AFTER, well within the grace
    const second = worker(hub.url, token, first.runDir);

    const done = await viewer.untilStatus(runId, ['succeeded', 'failed', 'lost', 'cancelled'], 30_000);
    expect(done.status).toBe('succeeded');
    expect(done.exitCode).toBe(0);
    const expected = Array.from({ length: lines }, (_, i) => `${marker} line ${i + 1}\n`).join('');
    expect(await recording(hub.url, operator, runId)).toBe(expected);
    expect(second.output()).toContain('re-adopting a run left by a previous worker');
    expect(await untilNoProcess(marker, 5000)).toEqual([]);
    expect(existsSync(join(first.runDir, runId))).toBe(false);
    console.log(`worker restart: re-adopted run finished ${Date.now() - killedAt} ms after the kill`);
  });

  it('down past WORKER_RECLAIM_GRACE, its run is lost and its dead-man switch leaves no process of it alive', async () => {
    const { hub, operator, viewer, token } = await setUp({ WORKER_LOST_AFTER: '1s', WORKER_RECLAIM_GRACE: '2s' });
    const marker = `abandon-${randomBytes(4).toString('hex')}`;
    const first = worker(hub.url, token);
    cleanups.push(() => rmSync(first.runDir, { recursive: true, force: true }));
    const created = await api(hub.url, operator, 'POST', '/api/task-runs', {
      // A job that ignores SIGTERM and one that left the run's session.
      command: { script: `trap '' TERM; sh -c 'trap "" TERM; while :; do sleep 0.2; done; : ${marker}' & setsid sh -c 'while :; do sleep 0.2; done; : ${marker}' & while :; do echo "${marker}"; sleep 0.2; done` },
    });
    const runId = created.body.id as string;
    await emitAck(viewer.socket, 'run:subscribe', { runId });
    await viewer.untilStatus(runId, ['running'], 20_000);
    await new Promise((r) => setTimeout(r, 500));
    expect(pidsMatching(marker).length).toBeGreaterThanOrEqual(3);

    await first.kill('SIGKILL');
    const killedAt = Date.now();
    const lost = await viewer.untilStatus(runId, ['lost'], 10_000);
    expect(lost.status).toBe('lost');
    // Threshold (1 s + 2 s) + one check period (1 s) + kill grace (2 s) + slack.
    expect(await untilNoProcess(marker, 9000)).toEqual([]);
    const stoppedAfter = Date.now() - killedAt;
    expect(stoppedAfter).toBeGreaterThanOrEqual(3000); // not before the hub gave up on it
    expect(existsSync(join(first.runDir, runId, 'abandoned'))).toBe(true);
    console.log(`worker down past the grace: run lost after ${new Date(lost.endedAt!).getTime() - killedAt} ms, its processes gone after ${stoppedAfter} ms`);

    // A worker that comes back later removes the abandoned run without asking anyone.
    const second = worker(hub.url, token, first.runDir);
    await new Promise((r) => setTimeout(r, 100));
    const probe = await api(hub.url, operator, 'POST', '/api/task-runs', { command: { script: 'echo back' } });
    await emitAck(viewer.socket, 'run:subscribe', { runId: probe.body.id });
    await viewer.untilStatus(probe.body.id, ['succeeded'], 20_000);
    expect(existsSync(join(first.runDir, runId))).toBe(false);
    await second.kill('SIGTERM');
  });

  it('a run cancelled while its worker was down is stopped by the restarted worker on the hub’s verdict, never continued', async () => {
    const { hub, operator, viewer, token } = await setUp({ WORKER_LOST_AFTER: '20s', WORKER_RECLAIM_GRACE: '20s' });
    const marker = `verdict-${randomBytes(4).toString('hex')}`;
    const first = worker(hub.url, token);
    cleanups.push(() => rmSync(first.runDir, { recursive: true, force: true }));
    const created = await api(hub.url, operator, 'POST', '/api/task-runs', {
      command: { script: `trap '' TERM; setsid sh -c 'while :; do sleep 0.2; done; : ${marker}' & while :; do echo "${marker}"; sleep 0.2; done` },
    });
    const runId = created.body.id as string;
    await emitAck(viewer.socket, 'run:subscribe', { runId });
    await viewer.untilStatus(runId, ['running'], 20_000);
    await first.kill('SIGKILL');
    const cancelled = await api(hub.url, operator, 'POST', `/api/task-runs/${runId}/cancel`, {});
    expect(cancelled.status).toBe(200);
    expect(pidsMatching(marker).length).toBeGreaterThan(0); // nobody told the host yet

    const restartedAt = Date.now();
    const second = worker(hub.url, token, first.runDir);
    expect(await untilNoProcess(marker, 8000)).toEqual([]);
    await eventually('the run directory to go', async () => !existsSync(join(first.runDir, runId)), 5000);
    expect(second.output()).toContain('stopping a run left by a previous worker');
    expect(second.output()).not.toContain('re-adopting a run left by a previous worker');
    expect(viewer.runs.get(runId)?.status).toBe('cancelled');
    console.log(`run cancelled while its worker was down: stopped ${Date.now() - restartedAt} ms after the worker restarted`);
  });
});
