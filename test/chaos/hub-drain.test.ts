import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Frame } from '@handoff/shared';
import { api, connect, emitAck, Viewer } from '../support/clients.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { startHubProcess, tokenIssuer, type HubProcess, type TokenIssuer } from '../support/hub-process.js';
import { startRedisServer, type RedisServer } from '../support/redis-server.js';
import { expectNumberedLines, numberedLinesScript, recordedText } from '../support/recording.js';
import { startWorker, type WorkerProcess } from '../support/worker.js';

const LINES = 240; // ~13 s: the run streams before, during and after the drain

/** Which of dr-1 … dr-LINES a text lacks. */
function missingFrom(text: string): string {
  const lines = new Set(text.split('\n'));
  const missing = Array.from({ length: LINES }, (_, i) => `dr-${i + 1}`).filter((l) => !lines.has(l));
  return missing.length ? missing.join(',') : 'none';
}

/** The pino JSON lines of a process's output. */
function logLines(output: string): Array<{ time: number; msg: string; [k: string]: unknown }> {
  return output.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { time: number; msg: string });
}

// SIGTERM of the hub node holding a worker (given both nodes' URLs) and a dashboard.
describe('chaos: SIGTERM drains a hub node', () => {
  let db: TestDatabase;
  let redis: RedisServer;
  let tokens: TokenIssuer;
  let a: HubProcess;
  let b: HubProcess;
  let worker: WorkerProcess;
  let operator: string;
  let admin: string;
  let viewerB: Viewer;

  beforeAll(async () => {
    db = await createTestDatabase();
    redis = await startRedisServer();
    tokens = await tokenIssuer(db.url);
    const env = { HEARTBEAT_INTERVAL: '500ms', WORKER_LOST_AFTER: '5s', SWEEP_INTERVAL: '200ms' };
    a = await startHubProcess({ databaseUrl: db.url, redisUrl: redis.url, env });
    b = await startHubProcess({ databaseUrl: db.url, redisUrl: redis.url, env });
    operator = await tokens.token('operator');
    admin = await tokens.token('admin');
    viewerB = await Viewer.connect(b.url, await tokens.token('observer'));
    // Node A first in its list: the worker connects there.
    worker = startWorker({ hubUrl: `${a.url},${b.url}`, token: await tokens.workerToken(`drain-${randomBytes(3).toString('hex')}`) });
  });
  afterAll(async () => {
    viewerB?.close();
    await worker?.stop();
    await a?.stop();
    await b?.stop();
    await tokens?.close();
    await redis?.destroy();
    await db?.drop();
  });

  it('readiness goes 503 at once, the node exits 0 within 10 s, the worker moves to the other node and its run finishes whole', async () => {
    const dashboardOnA = await connect(a.url, '/dashboard', await tokens.token('observer'));
    const dashboardGone = new Promise<string>((resolve) => dashboardOnA.once('disconnect', (reason) => resolve(reason)));

    const created = await api(b.url, operator, 'POST', '/api/task-runs', { command: { script: numberedLinesScript('dr', LINES) } });
    expect(created.status).toBe(201);
    const runId = created.body.id as string;
    const arrivals: number[] = [];
    viewerB.socket.on('term:frame', ({ runId: id }: { runId: string; frames: Frame[] }) => {
      if (id === runId) arrivals.push(Date.now());
    });
    await emitAck(viewerB.socket, 'run:subscribe', { runId });
    await emitAck(viewerB.socket, 'term:subscribe', { runId });
    await viewerB.until('the run streaming through node A', () => (viewerB.live.get(runId) ?? []).map((f) => f.data).join('').includes('dr-30'), 30_000);
    expect(logLines(worker.output()).filter((l) => l.msg === 'worker connected')).toHaveLength(1);

    // Readiness of node A, polled until it stops answering.
    const ready: Array<{ at: number; status: number | 'refused' }> = [];
    let polling = true;
    const poller = (async () => {
      while (polling) {
        const at = Date.now();
        const status = await fetch(`${a.url}/readyz`).then((r) => r.status, () => 'refused' as const);
        ready.push({ at, status });
        if (status === 'refused') return;
        await new Promise((r) => setTimeout(r, 20));
      }
    })();

    const termAt = Date.now();
    a.proc.kill('SIGTERM');
    const exit = await a.exited();
    const drainMs = Date.now() - termAt;
    polling = false;
    await poller;

    expect(exit).toEqual({ code: 0, signal: null });
    expect(drainMs).toBeLessThan(10_000);
    const during = ready.filter((r) => r.at >= termAt);
    // Once it has said 503 it never says 200 again, until it stops answering at all.
    const first503 = during.findIndex((r) => r.status === 503);
    expect(first503).toBeGreaterThanOrEqual(0);
    expect(during.slice(first503).every((r) => r.status === 503 || r.status === 'refused')).toBe(true);
    expect(during.at(-1)?.status).toBe('refused');
    // The dashboard's transport was closed (socket.io clients reconnect by themselves), not kicked.
    expect(await dashboardGone).toBe('transport close');
    dashboardOnA.close();

    // The worker went on to node B; its run finishes there with every line recorded once.
    const done = await viewerB.untilStatus(runId, ['succeeded', 'failed', 'lost', 'cancelled'], 30_000);
    expect(done.status).toBe('succeeded');
    expect(done.exitCode).toBe(0);
    const workerLog = logLines(worker.output());
    const left = workerLog.find((l) => l.msg === 'disconnected from hub' && l.time >= termAt);
    const back = workerLog.filter((l) => l.msg === 'worker connected').at(-1);
    expect(left).toBeDefined();
    expect(back && back.time > left!.time).toBe(true);
    const failoverMs = back!.time - left!.time;
    const gaps = arrivals.slice(1).map((t, i) => ({ at: arrivals[i]!, gap: t - arrivals[i]! })).filter((g) => g.at >= termAt - 1000);
    const longestPause = Math.max(0, ...gaps.map((g) => g.gap));
    const drained = logLines(a.output()).find((l) => l.msg === 'drained');
    expect(drained).toBeDefined();
    expect(b.alive()).toBe(true);
    const recorded = await recordedText(b.url, admin, runId);
    const liveB = (viewerB.live.get(runId) ?? []).map((f) => f.data).join('').replace(/\r\n/g, '\n');
    console.info(
      `SIGTERM drain: /readyz 503 after ${during[first503]!.at - termAt} ms, node exited 0 after ${drainMs} ms (drain itself ${String(drained!.tookMs)} ms); ` +
        `worker back on node B ${failoverMs} ms after its socket closed; longest pause in the live stream ${longestPause} ms; ` +
        `lines missing from the recording ${missingFrom(recorded)}, from node B's live view ${missingFrom(liveB)}`,
    );
    // The guarantee: every line once, in order, across the move (terminal.ts owns the recording).
    expectNumberedLines(recorded, 'dr', LINES);
  });
});
