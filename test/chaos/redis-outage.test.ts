import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LiveSession } from '@handoff/shared';
import { api, emitAck, eventually, Viewer } from '../support/clients.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { startHubProcess, tokenIssuer, type HubProcess, type TokenIssuer } from '../support/hub-process.js';
import { startRedisServer, type RedisServer } from '../support/redis-server.js';
import { startWorker, type WorkerProcess } from '../support/worker.js';

const OUTAGE_MS = 15_000;

/** /readyz of a node: status and its Redis check. */
async function readiness(hub: HubProcess): Promise<{ status: number; redis: boolean | undefined }> {
  const res = await fetch(`${hub.url}/readyz`);
  const body = (await res.json()) as { checks: { redis?: boolean } };
  return { status: res.status, redis: body.checks.redis };
}

// Redis (the test's own) is killed for 15 s and restarted under two real hub processes on
// one database; a real worker is connected to node B, dashboards to both nodes.
describe('chaos: Redis is killed for 15 s under two hub nodes', () => {
  let db: TestDatabase;
  let redis: RedisServer;
  let tokens: TokenIssuer;
  let a: HubProcess;
  let b: HubProcess;
  let worker: WorkerProcess;
  let operator: string;
  let viewerA: Viewer;
  let viewerB: Viewer;

  beforeAll(async () => {
    db = await createTestDatabase();
    redis = await startRedisServer();
    tokens = await tokenIssuer(db.url);
    const env = { SWEEP_INTERVAL: '200ms', HEARTBEAT_INTERVAL: '1s', WORKER_LOST_AFTER: '10s' };
    a = await startHubProcess({ databaseUrl: db.url, redisUrl: redis.url, env });
    b = await startHubProcess({ databaseUrl: db.url, redisUrl: redis.url, env });
    operator = await tokens.token('operator');
    const observer = await tokens.token('observer');
    viewerA = await Viewer.connect(a.url, observer);
    viewerB = await Viewer.connect(b.url, observer);
    worker = startWorker({ hubUrl: b.url, token: await tokens.workerToken(`redis-chaos-${randomBytes(3).toString('hex')}`) });
  });
  afterAll(async () => {
    viewerA?.close();
    viewerB?.close();
    await worker?.stop();
    await a?.stop();
    await b?.stop();
    await tokens?.close();
    await redis?.destroy();
    await db?.drop();
  });

  /** Creates a run through node A; both viewers follow its status and frames. */
  async function createRun(script: string): Promise<string> {
    const res = await api(a.url, operator, 'POST', '/api/task-runs', { command: { script } });
    expect(res.status).toBe(201);
    const runId = res.body.id as string;
    for (const v of [viewerA, viewerB]) {
      await emitAck(v.socket, 'run:subscribe', { runId });
      await emitAck(v.socket, 'term:subscribe', { runId });
    }
    return runId;
  }
  const liveText = (v: Viewer, runId: string) => (v.live.get(runId) ?? []).map((f) => f.data).join('');

  it('both nodes stay up and serve their own sockets; fan-out and the sweeper resume when Redis is back', async () => {
    // Cross-node path before the outage: created on A, run by the worker on B, watched on A.
    const long = await createRun('i=0; while [ $i -lt 1200 ]; do i=$((i+1)); echo "tick-$i"; sleep 0.05; done');
    await viewerA.until('frames of node B’s worker on node A', () => liveText(viewerA, long).includes('tick-10'), 30_000);
    const pids = [a.proc.pid, b.proc.pid];

    await redis.stop('SIGKILL');
    const killedAt = Date.now();
    const framesOnB = viewerB.live.get(long)?.length ?? 0;
    const messagesOnA: string[] = [];
    viewerA.socket.on('message:created', (m: { message: string }) => messagesOnA.push(m.message));
    const readyDuring: Array<{ status: number; redis: boolean | undefined }> = [];
    let sent = 0;
    while (Date.now() - killedAt < OUTAGE_MS) {
      expect(a.alive() && b.alive()).toBe(true);
      readyDuring.push(await readiness(a), await readiness(b));
      // A command through node A still answers, and node A's own dashboards get its push.
      const msg = await api(a.url, operator, 'POST', `/api/task-runs/${long}/operator-messages`, { message: `during-${++sent}` });
      expect(msg.status).toBe(201);
      await new Promise((r) => setTimeout(r, 1000));
    }
    // Node B's dashboard kept receiving the frames of node B's worker.
    const framesDuringOnB = (viewerB.live.get(long)?.length ?? 0) - framesOnB;
    expect(framesDuringOnB).toBeGreaterThan(50);
    expect(messagesOnA.filter((m) => m.startsWith('during-')).length).toBe(sent);
    // Readiness says Redis is down (the first probe may race the kill).
    expect(readyDuring.slice(2).every((r) => r.status === 503 && r.redis === false)).toBe(true);

    await redis.start();
    const restartedAt = Date.now();
    await eventually('both nodes ready again', async () => (await readiness(a)).status === 200 && (await readiness(b)).status === 200, 15_000);
    const readyAfterMs = Date.now() - restartedAt;

    // Cross-node fan-out again: a new run created on A, run on B, its frames seen on A.
    const after = await createRun('echo after-redis-$((40+2)); sleep 0.3');
    await viewerA.until('cross-node frames after the outage', () => liveText(viewerA, after).includes('after-redis-42'), 20_000);
    const done = await viewerA.untilStatus(after, ['succeeded', 'failed', 'lost', 'cancelled'], 20_000);
    expect(done.status).toBe('succeeded');
    const fanOutAfterMs = Date.now() - restartedAt;

    // The sweeper's lease works again: a live session made due now is expired by the leader.
    const sessions = (await api(a.url, operator, 'GET', `/api/task-runs/${long}/live-sessions`)).body.sessions as LiveSession[];
    const web = sessions.find((s) => s.status === 'READY');
    expect(web).toBeDefined();
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    await client.query(`update live_sessions set expires_at = now() where id = $1`, [web!.id]);
    await client.end();
    const dueAt = Date.now();
    const ended = await eventually('the session expired by the sweeper', async () => {
      const list = (await api(a.url, operator, 'GET', `/api/task-runs/${long}/live-sessions`)).body.sessions as LiveSession[];
      const s = list.find((x) => x.id === web!.id);
      return s && s.status === 'ENDED' ? s : undefined;
    }, 10_000);
    expect(ended.endReason).toBe('ttl');
    const expiryMs = Date.now() - dueAt;

    // Both processes are the very ones started before the outage, and still running.
    expect([a.proc.pid, b.proc.pid]).toEqual(pids);
    expect(a.alive() && b.alive()).toBe(true);
    await api(a.url, operator, 'POST', `/api/task-runs/${long}/cancel`, {});

    for (const [name, node] of [['A', a], ['B', b]] as const) {
      const lines = node.output().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { level: number; msg: string });
      // The outage is one event in each log: once when it starts, once when it ends.
      expect(lines.filter((l) => l.msg.startsWith('redis unavailable')).length, `node ${name}`).toBe(1);
      expect(lines.filter((l) => l.msg.startsWith('redis available again')).length, `node ${name}`).toBe(1);
      expect(lines.filter((l) => /unhandled|sweep failed/.test(l.msg)), `node ${name}`).toEqual([]);
    }
    const exits = await Promise.all([a.kill('SIGTERM'), b.kill('SIGTERM')]);
    expect(exits).toEqual([{ code: 0, signal: null }, { code: 0, signal: null }]);
    console.info(
      `Redis outage ${OUTAGE_MS} ms: both nodes alive; node B's dashboard got ${framesDuringOnB} frames and node A's dashboard ${messagesOnA.length} messages during it; ` +
        `after restart both /readyz 200 in ${readyAfterMs} ms, cross-node run done in ${fanOutAfterMs} ms, TTL expiry by the sweeper in ${expiryMs} ms`,
    );
  });
});
