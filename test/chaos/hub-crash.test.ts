import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Frame, Run } from '@handoff/shared';
import { api, connect, emitAck, eventually, joinFrames } from '../support/clients.js';
import { createTestDatabase, REDIS_URL, type TestDatabase } from '../support/db.js';
import { startHubProcess, tokenIssuer, type HubProcess, type TokenIssuer } from '../support/hub-process.js';
import { expectNumberedLines, numberedLinesScript, recordedText } from '../support/recording.js';
import { startWorker, type WorkerProcess } from '../support/worker.js';

// Real hub processes on one PostgreSQL database, sharing rooms through Redis. The worker
// knows every node (HANDOFF_URL=a,b[,c]) and moves to a live one when its node dies.
const FAST = { HEARTBEAT_INTERVAL: '500ms', WORKER_LOST_AFTER: '3s', WORKER_RECLAIM_GRACE: '30s', SWEEP_INTERVAL: '200ms', LOG_LEVEL: 'info' };

/** How many times a worker said hello to this node (its 'worker connected' log lines). */
const greetings = (hub: HubProcess) => hub.output().split('"msg":"worker connected"').length - 1;

const runOf = async (hub: HubProcess, token: string, runId: string) => (await api(hub.url, token, 'GET', `/api/task-runs/${runId}`)).body as Run;

/**
 * A dashboard that follows one run's terminal across node restarts, as the web client does:
 * on a disconnect it connects to the next node and resubscribes after the last seq it has.
 */
class FollowingObserver {
  readonly frames = new Map<number, Frame>();
  private node = 0;
  private closed = false;
  constructor(
    private readonly hubs: HubProcess[],
    private readonly token: string,
    private readonly runId: string,
  ) {}

  async start(): Promise<void> {
    for (;;) {
      if (this.closed) return;
      const hub = this.hubs[this.node % this.hubs.length]!;
      this.node += 1;
      try {
        const socket = await connect(hub.url, '/dashboard', this.token);
        socket.on('term:frame', ({ runId, frames }: { runId: string; frames: Frame[] }) => {
          if (runId === this.runId) for (const f of frames) this.frames.set(f.seq, f);
        });
        const afterSeq = this.frames.size ? Math.max(...this.frames.keys()) : undefined;
        const ack = await emitAck<{ frames: Frame[] }>(socket, 'term:subscribe', afterSeq === undefined ? { runId: this.runId } : { runId: this.runId, afterSeq });
        if (!ack.ok) throw new Error(ack.error.message);
        for (const f of ack.data.frames) this.frames.set(f.seq, f);
        await new Promise<void>((resolve) => socket.once('disconnect', () => resolve()));
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  text(): string {
    return joinFrames([...this.frames.values()]).replace(/\r\n/g, '\n');
  }

  stop(): void {
    this.closed = true;
  }
}

describe('chaos: hub nodes die and restart under a streaming run', () => {
  let db: TestDatabase;
  let tokens: TokenIssuer;
  const hubs: HubProcess[] = [];
  const workers: WorkerProcess[] = [];

  beforeAll(async () => {
    db = await createTestDatabase();
    tokens = await tokenIssuer(db.url); // runs the migrations before any hub starts
  });
  afterAll(async () => {
    for (const w of workers) await w.stop();
    for (const h of hubs) await h.stop();
    await tokens?.close();
    await db?.drop();
  });

  it('SIGKILL + restart of the worker’s node, 5 rounds: every line once, in order; the real exit code; a pause sent to the other node during each outage is applied after it', async () => {
    const env = { ...FAST, REDIS_KEY_PREFIX: `handoff-crash-${randomBytes(4).toString('hex')}` };
    const a = await startHubProcess({ databaseUrl: db.url, redisUrl: REDIS_URL, env });
    const b = await startHubProcess({ databaseUrl: db.url, redisUrl: REDIS_URL, env });
    hubs.push(a, b);
    const operator = await tokens.token('operator');
    const worker = startWorker({ hubUrl: `${a.url},${b.url}`, token: await tokens.workerToken(`crash-${randomBytes(3).toString('hex')}`) });
    workers.push(worker);

    const n = 500;
    const created = await api(b.url, operator, 'POST', '/api/task-runs', { command: { script: `${numberedLinesScript('hc', n, 0.04)}; exit 7` } });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const runId = created.body.id as string;
    await eventually('the run running', async () => (await runOf(b, operator, runId)).status === 'running', 20_000);

    // The worker connects to its first URL (a); after each kill it is on the other node.
    let holder = a;
    let other = b;
    const recoveries: number[] = [];
    for (let round = 1; round <= 5; round++) {
      await new Promise((r) => setTimeout(r, 700));
      const greetedBefore = greetings(other);
      const killedAt = Date.now();
      await holder.kill('SIGKILL');
      // During the outage: a hard pause through the surviving node.
      const paused = await api(other.url, operator, 'POST', `/api/task-runs/${runId}/control`, { action: 'pause', mode: 'hard' });
      expect(paused.status, JSON.stringify(paused.body)).toBe(200);
      const seq = paused.body.control.seq as number;
      await eventually(`round ${round}: the pause applied after the outage`, async () => {
        const r = await runOf(other, operator, runId);
        return r.control.appliedSeq >= seq && r.control.state === 'paused';
      }, 20_000);
      recoveries.push(Date.now() - killedAt);
      // The kill hit the worker's node: the worker said hello to the other one since.
      expect(greetings(other)).toBeGreaterThan(greetedBefore);
      expect((await runOf(other, operator, runId)).status).toBe('running');
      await holder.restart();
      const resumed = await api(other.url, operator, 'POST', `/api/task-runs/${runId}/control`, { action: 'resume' });
      expect(resumed.status).toBe(200);
      await eventually(`round ${round}: resumed`, async () => (await runOf(other, operator, runId)).control.appliedSeq >= (resumed.body.control.seq as number), 20_000);
      [holder, other] = [other, holder];
    }

    const done = await eventually('the run ended', async () => {
      const r = await runOf(a, operator, runId);
      return ['succeeded', 'failed', 'lost', 'cancelled'].includes(r.status) ? r : undefined;
    }, 60_000);
    expect({ status: done.status, exitCode: done.exitCode }).toEqual({ status: 'failed', exitCode: 7 });
    expectNumberedLines(await recordedText(a.url, operator, runId), 'hc', n);
    const verify = await api(a.url, await tokens.token('admin'), 'GET', `/api/task-runs/${runId}/events/verify`);
    expect(verify.body.ok).toBe(true);
    console.info(`hub crash: kill → pause applied on the other node, ms per round: ${recoveries.join(', ')}`);
  });

  it('rolling restart (SIGTERM, then start) of three nodes while a run streams: the observer’s final output equals the command’s output', async () => {
    const env = { ...FAST, REDIS_KEY_PREFIX: `handoff-roll-${randomBytes(4).toString('hex')}` };
    const three = [
      await startHubProcess({ databaseUrl: db.url, redisUrl: REDIS_URL, env }),
      await startHubProcess({ databaseUrl: db.url, redisUrl: REDIS_URL, env }),
      await startHubProcess({ databaseUrl: db.url, redisUrl: REDIS_URL, env }),
    ];
    hubs.push(...three);
    const operator = await tokens.token('operator');
    const worker = startWorker({ hubUrl: three.map((h) => h.url).join(','), token: await tokens.workerToken(`roll-${randomBytes(3).toString('hex')}`) });
    workers.push(worker);
    const n = 300;
    const created = await api(three[2]!.url, operator, 'POST', '/api/task-runs', { command: { script: numberedLinesScript('rr', n, 0.04) } });
    const runId = created.body.id as string;
    await eventually('the run running', async () => (await runOf(three[2]!, operator, runId)).status === 'running', 20_000);
    const observer = new FollowingObserver([three[1]!, three[2]!, three[0]!], operator, runId);
    const following = observer.start();

    for (const node of three) {
      const { code } = await node.kill('SIGTERM');
      expect(code).toBe(0);
      await node.restart();
    }
    const done = await eventually('the run ended', async () => {
      const r = await runOf(three[0]!, operator, runId);
      return ['succeeded', 'failed', 'lost', 'cancelled'].includes(r.status) ? r : undefined;
    }, 60_000);
    expect({ status: done.status, exitCode: done.exitCode }).toEqual({ status: 'succeeded', exitCode: 0 });
    const expected = Array.from({ length: n }, (_, i) => `rr-${i + 1}\n`).join('');
    await eventually('the observer has every frame', async () => observer.text() === expected, 15_000).catch(() => undefined);
    observer.stop();
    expect(observer.text()).toBe(expected);
    expectNumberedLines(await recordedText(three[0]!.url, operator, runId), 'rr', n);
    void following;
  });
});
