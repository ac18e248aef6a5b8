import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Frame } from '@handoff/shared';
import { api, connect, emitAck, joinFrames, Viewer } from '../support/clients.js';
import { createTestDatabase, REDIS_URL, type TestDatabase } from '../support/db.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { untilNoProcess } from '../support/processes.js';
import { startWorker, type WorkerProcess } from '../support/worker.js';

// Two hub nodes on one PostgreSQL database, sharing rooms through the Redis adapter.
describe('two hub nodes over Redis', () => {
  let db: TestDatabase;
  let a: TestHub;
  let b: TestHub;
  let worker: WorkerProcess;
  let viewerOnA: Viewer;
  let operator: string;

  beforeAll(async () => {
    db = await createTestDatabase();
    const env = { REDIS_KEY_PREFIX: `handoff-test-${randomBytes(4).toString('hex')}` };
    a = await startTestHub({ databaseUrl: db.url, redisUrl: REDIS_URL, env });
    // Node B records slowly, so fresh frames sit only in B's memory for a while.
    b = await startTestHub({ databaseUrl: db.url, redisUrl: REDIS_URL, env: { ...env, RECORDING_FLUSH: '2500ms' } });
    operator = await a.token('operator');
    viewerOnA = await Viewer.connect(a.url, await a.token('observer'));
    // The worker holds its socket to node B only.
    worker = startWorker({ hubUrl: b.url, token: await b.workerToken('node-b-worker') });
  });
  afterAll(async () => {
    viewerOnA?.close();
    await worker?.stop();
    await a?.stop();
    await b?.stop();
    await db?.drop();
  });

  it('reports Redis in readiness on both nodes', async () => {
    for (const hub of [a, b]) {
      const res = await api(hub.url, null, 'GET', '/readyz');
      expect(res.body).toEqual({ ok: true, checks: { database: true, redis: true } });
    }
  });

  it('a run created on node A runs on the worker of node B; A’s viewers see its status and every frame', async () => {
    const n = 50;
    const expected = Array.from({ length: n }, (_, i) => `x ${i + 1}`).join('\n') + '\n';
    const created = await api(a.url, operator, 'POST', '/api/task-runs', { command: { script: `for i in $(seq 1 ${n}); do echo "x $i"; sleep 0.04; done` } });
    const runId = created.body.id as string;
    const ack = await emitAck<{ frames: Frame[] }>(viewerOnA.socket, 'term:subscribe', { runId });
    expect(ack.ok).toBe(true);
    const early = ack.ok ? ack.data.frames : [];
    await viewerOnA.until('x 20 on node A', () => joinFrames(viewerOnA.live.get(runId) ?? []).includes('x 20'));

    // A late joiner on node A, while the frames stream into node B.
    const late = await Viewer.connect(a.url, await a.token('observer'));
    try {
      const lateAck = await emitAck<{ frames: Frame[] }>(late.socket, 'term:subscribe', { runId });
      expect(lateAck.ok).toBe(true);
      const scrollback = lateAck.ok ? lateAck.data.frames : [];
      await viewerOnA.untilStatus(runId, ['succeeded'], 30_000);
      const merge = (...lists: Frame[][]) => [...new Map(lists.flat().map((f) => [f.seq, f])).values()];
      const full = (frames: Frame[]) => joinFrames(frames).replace(/\r\n/g, '\n');
      await late.until('late joiner complete', () => full(merge(scrollback, late.live.get(runId) ?? [])) === expected, 10_000).catch(() => undefined);
      expect(full(merge(early, viewerOnA.live.get(runId) ?? []))).toBe(expected);
      expect(full(merge(scrollback, late.live.get(runId) ?? []))).toBe(expected);
    } finally {
      late.close();
    }
  });

  it('a late joiner on node A gets the frames node B has broadcast but not yet recorded', async () => {
    const created = await api(a.url, operator, 'POST', '/api/task-runs', { command: { script: 'for i in 1 2 3 4 5; do echo "early $i"; done; sleep 2; echo "after the pause"' } });
    const runId = created.body.id as string;
    await emitAck(viewerOnA.socket, 'term:subscribe', { runId });
    await viewerOnA.until('early lines live on A', () => joinFrames(viewerOnA.live.get(runId) ?? []).includes('early 5'));
    // Within B's flush window: the early frames are in no database row yet.
    const late = await Viewer.connect(a.url, await a.token('observer'));
    try {
      const ack = await emitAck<{ frames: Frame[] }>(late.socket, 'term:subscribe', { runId });
      expect(ack.ok).toBe(true);
      const scrollback = ack.ok ? joinFrames(ack.data.frames) : '';
      expect(scrollback).toContain('early 1');
      expect(scrollback).toContain('early 5');
      await viewerOnA.untilStatus(runId, ['succeeded'], 30_000);
    } finally {
      late.close();
    }
  });

  it('a cancel sent to node A reaches the worker on node B', async () => {
    const marker = `handoff-mn-${randomBytes(4).toString('hex')}`;
    const created = await api(a.url, operator, 'POST', '/api/task-runs', { command: { script: `sh -c 'sleep 900; : ${marker}'` } });
    const runId = created.body.id as string;
    await viewerOnA.untilStatus(runId, ['running']);
    const res = await api(a.url, operator, 'POST', `/api/task-runs/${runId}/cancel`, {});
    expect(res.body.status).toBe('cancelled');
    expect(await untilNoProcess(marker)).toEqual([]);
    await viewerOnA.until('exit code recorded', () => viewerOnA.runs.get(runId)?.exitCode != null);
  });

  it('a takeover sent to node A reaches the worker on node B; keystrokes typed through A reach its shell; the hand-back comes back', async () => {
    const created = await api(a.url, operator, 'POST', '/api/task-runs', { command: { script: 'i=0; while true; do handoff-agent checkpoint; i=$((i+1)); echo "step $i"; sleep 0.2; done' } });
    const runId = created.body.id as string;
    await emitAck(viewerOnA.socket, 'run:subscribe', { runId });
    await emitAck(viewerOnA.socket, 'term:subscribe', { runId });
    await viewerOnA.until('web share READY', () => viewerOnA.runs.get(runId)?.sessions.some((s) => s.provider === 'web' && s.status === 'READY'));
    const taken = await api(a.url, operator, 'POST', `/api/task-runs/${runId}/control`, { action: 'takeover', ttlMinutes: 5 });
    expect(taken.body.control.state).toBe('operator');
    await viewerOnA.until('takeover applied', () => (viewerOnA.runs.get(runId)?.control.appliedSeq ?? 0) >= 1);
    const typist = await connect(a.url, '/dashboard', operator);
    try {
      const marker = `mn-${randomBytes(4).toString('hex')}`;
      // The ack only comes once node B's worker handed the keys to tmux.
      expect(await emitAck(typist, 'term:input', { runId, data: `echo ${marker.slice(0, 3)}""${marker.slice(3)}\r` })).toMatchObject({ ok: true });
      const text = () => joinFrames([...new Map((viewerOnA.live.get(runId) ?? []).map((f) => [f.seq, f])).values()]);
      await viewerOnA.until('typed output on node A', () => new RegExp(`[\r\n]${marker}\r\n`).test(text()));
    } finally {
      typist.close();
    }
    const back = await api(a.url, operator, 'POST', `/api/task-runs/${runId}/control`, { action: 'handback', summary: 'done on node A' });
    expect(back.status).toBe(200);
    await viewerOnA.until('hand-back applied', () => (viewerOnA.runs.get(runId)?.control.appliedSeq ?? 0) >= 2);
    await api(a.url, operator, 'POST', `/api/task-runs/${runId}/cancel`, {});
  });
});
