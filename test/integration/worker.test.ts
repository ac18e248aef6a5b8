import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Frame } from '@handoff/shared';
import { api, emitAck, joinFrames, Viewer } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { pidsMatching, untilNoProcess } from '../support/processes.js';
import { startWorker, type WorkerProcess } from '../support/worker.js';

const marker = () => `handoff-w-${randomBytes(4).toString('hex')}`;

describe('worker against a real hub', () => {
  let hub: TestHub;
  let operator: string;
  let viewer: Viewer;
  const workers: WorkerProcess[] = [];
  const markers: string[] = [];

  beforeAll(async () => {
    hub = await startTestHub();
    operator = await hub.token('operator');
    viewer = await Viewer.connect(hub.url, await hub.token('observer'));
  });
  afterEach(async () => {
    for (const w of workers.splice(0)) await w.stop();
    for (const m of markers.splice(0)) for (const pid of pidsMatching(m)) process.kill(pid, 'SIGKILL');
  });
  afterAll(async () => {
    viewer?.close();
    await hub?.stop();
  });

  const create = async (script: string, extra: Record<string, unknown> = {}) => {
    const res = await api(hub.url, operator, 'POST', '/api/task-runs', { command: { script }, ...extra });
    expect(res.status).toBe(201);
    return res.body.id as string;
  };

  it('never runs more than its capacity: the second run waits in the queue until the first ends', async () => {
    const w = startWorker({ hubUrl: hub.url, token: await hub.workerToken(`cap-${marker()}`), capacity: 1 });
    workers.push(w);
    const first = await create('sleep 1; echo first');
    const second = await create('echo second');
    await viewer.untilStatus(first, ['running']);
    await new Promise((r) => setTimeout(r, 300));
    expect(viewer.runs.get(second)?.status ?? 'queued').toBe('queued');
    await viewer.untilStatus(first, ['succeeded']);
    const done = await viewer.untilStatus(second, ['succeeded']);
    expect(new Date(done.startedAt!).getTime()).toBeGreaterThanOrEqual(new Date(viewer.runs.get(first)!.endedAt!).getTime());
  });

  it('a run that cannot start fails with a clear reason and no exit code', async () => {
    const w = startWorker({ hubUrl: hub.url, token: await hub.workerToken(`nocwd-${marker()}`) });
    workers.push(w);
    const runId = await create('echo never', { cwd: '/definitely/not/here' });
    const run = await viewer.untilStatus(runId, ['failed']);
    expect(run.exitCode).toBeNull();
    expect(run.errorMessage).toMatch(/not\/here/);
  });

  it('runs get an allowlisted environment: never the worker token, nor the hub’s database, Redis, data dir or keys (as under `pnpm start`)', async () => {
    // The worker's environment as `pnpm start` gives it: the hub's own variables included.
    const hubEnv = {
      DATABASE_URL: 'postgresql://hub:hub-db-secret@127.0.0.1:5432/handoff', REDIS_URL: 'redis://127.0.0.1:6379/9',
      HANDOFF_DATA_DIR: '/srv/handoff-data', HANDOFF_SECRET_KEY: 'a'.repeat(64), HANDOFF_METRICS_TOKEN: 'metrics-secret', CI_BUILD: '42',
    };
    const w = startWorker({ hubUrl: hub.url, token: await hub.workerToken(`env-${marker()}`), env: { ...hubEnv, WORKER_PASS_ENV: 'CI_*' } });
    workers.push(w);
    const runId = await create('echo "token=[${HANDOFF_WORKER_TOKEN:-none}] run=[$HANDOFF_RUN_ID] mine=[$MY_VAR] ci=[$CI_BUILD]"; echo ---; env', { env: { MY_VAR: 'v1' } });
    await viewer.untilStatus(runId, ['succeeded']);
    const out = joinFrames((await hub.terminal.scrollback(runId, 0)).frames).replace(/\r\n/g, '\n');
    expect(out).toContain(`token=[none] run=[${runId}] mine=[v1] ci=[42]`);
    const names = out.split('---\n')[1]!.split('\n').map((l) => l.split('=')[0]);
    for (const name of ['DATABASE_URL', 'REDIS_URL', 'HANDOFF_DATA_DIR', 'HANDOFF_SECRET_KEY', 'HANDOFF_METRICS_TOKEN', 'HANDOFF_WORKER_TOKEN', 'HANDOFF_URL']) expect(names).not.toContain(name);
    for (const secret of ['hub-db-secret', 'metrics-secret', 'a'.repeat(64)]) expect(out).not.toContain(secret);
    expect(names).toEqual(expect.arrayContaining(['PATH', 'HOME', 'HANDOFF_RUN_ID', 'HANDOFF_INBOX', 'MY_VAR']));
  });

  it('reconnects after the hub disconnects it on purpose, and the run completes intact', async () => {
    const w = startWorker({ hubUrl: hub.url, token: await hub.workerToken(`kick-${marker()}`) });
    workers.push(w);
    const runId = await create('for i in $(seq 1 30); do echo "n $i"; sleep 0.05; done');
    await viewer.untilStatus(runId, ['running']);
    // `io server disconnect`: socket.io clients do not reconnect by themselves after this.
    hub.io.of('/worker').disconnectSockets(true);
    await viewer.untilStatus(runId, ['succeeded'], 30_000);
    const frames: Frame[] = (await hub.terminal.scrollback(runId, 0)).frames;
    expect(joinFrames(frames).replace(/\r\n/g, '\n')).toBe(Array.from({ length: 30 }, (_, i) => `n ${i + 1}\n`).join(''));
  });

  it('a SIGKILLed worker leaves its run running; its restart re-adopts the run instead of killing it, and it ends normally', async () => {
    const name = `crash-${marker()}`;
    const token = await hub.workerToken(name);
    const m = marker();
    markers.push(m);
    const first = startWorker({ hubUrl: hub.url, token });
    const runId = await create(`sh -c 'sleep 900; : ${m}' & echo up; sleep 3; kill $!; echo "done ${m}"`);
    await viewer.untilStatus(runId, ['running']);
    // `running` is reported as the command starts; its background job may take a moment more.
    await viewer.until('the run’s background job', () => pidsMatching(m).length > 0 || undefined, 10_000);
    await first.kill('SIGKILL'); // a crash: no cleanup happens, the run goes on
    expect(existsSync(path.join(first.runDir, runId, 'tmux.sock'))).toBe(true);
    expect(pidsMatching(m).length).toBeGreaterThan(0);

    // Back well within WORKER_LOST_AFTER: the hub still has the run as this worker's.
    const second = startWorker({ hubUrl: hub.url, token, runDir: first.runDir });
    workers.push(second);
    const done = await viewer.untilStatus(runId, ['succeeded', 'failed', 'lost'], 30_000);
    expect(done).toMatchObject({ status: 'succeeded', exitCode: 0 });
    const frames = await emitAck<{ frames: Frame[] }>(viewer.socket, 'term:subscribe', { runId, afterSeq: 0 });
    expect(frames.ok && joinFrames(frames.data.frames).replace(/\r\n/g, '\n')).toBe(`up\ndone ${m}\n`);
    expect(await untilNoProcess(m)).toEqual([]);
    expect(readdirSync(first.runDir)).not.toContain(runId);
    // Its tmux server and helpers were told to go before the directory went; under load one may take a moment to exit.
    expect(await untilNoProcess(path.join(first.runDir, runId))).toEqual([]);
    // The restarted worker takes new work.
    const next = await create('echo after-restart');
    await viewer.untilStatus(next, ['succeeded']);
  });

  it('stopping a worker (SIGTERM) cancels its active runs, reports their exits, and leaves no process', async () => {
    const m = marker();
    markers.push(m);
    const w = startWorker({ hubUrl: hub.url, token: await hub.workerToken(`stop-${m}`) });
    const runId = await create(`sh -c 'sleep 900; : ${m}'`);
    await viewer.untilStatus(runId, ['running']);
    await w.stop();
    const run = await viewer.untilStatus(runId, ['failed'], 15_000);
    expect(run.exitCode).toBe(143);
    expect(run.errorMessage).toMatch(/shut down/);
    expect(await untilNoProcess(m)).toEqual([]);
    const ack = await emitAck(viewer.socket, 'run:subscribe', { runId });
    expect(ack.ok).toBe(true);
  });
});
