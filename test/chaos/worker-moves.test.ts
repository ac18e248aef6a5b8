import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, eventually } from '../support/clients.js';
import { createTestDatabase, REDIS_URL, type TestDatabase } from '../support/db.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { lineNumbers, numberedFrames, recordedText, ScriptedWorker } from '../support/scripted-worker.js';

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

// Two hub nodes on one database and one Redis. The worker is a socket client speaking the
// worker protocol (it resends from the lastSeq each hello answers, as the real worker does),
// so it can hop between nodes at exact points of its run.
describe('chaos: a worker moving A → B → A between hub nodes during a run', () => {
  let db: TestDatabase;
  let a: TestHub;
  let b: TestHub;
  let admin: string;

  beforeAll(async () => {
    db = await createTestDatabase();
    const env = { REDIS_KEY_PREFIX: `handoff-move-${randomBytes(4).toString('hex')}` };
    a = await startTestHub({ databaseUrl: db.url, redisUrl: REDIS_URL, env });
    b = await startTestHub({ databaseUrl: db.url, redisUrl: REDIS_URL, env });
    admin = await a.token('admin');
  });
  afterAll(async () => {
    await a?.stop();
    await b?.stop();
    await db?.drop();
  });

  it('the run finishes, its recording is complete, and nothing stalls', async () => {
    const token = await a.workerToken(`mover-${randomBytes(3).toString('hex')}`);
    const runId = (await api(a.url, admin, 'POST', '/api/task-runs', { command: { script: 'scripted' }, liveSession: false })).body.id as string;
    const sent = { through: 0 };
    /** Sends frames up to `to` from what the hub says it recorded, until all are acked. */
    const stream = async (w: ScriptedWorker, from: number, to: number) => {
      let acked = from - 1;
      for (let chunk = from; chunk <= to; chunk += 10) {
        const ack = await w.output(runId, numberedFrames(acked + 1, Math.min(chunk + 9, to)));
        if (!ack.ok) throw new Error(ack.error.message);
        acked = ack.data.lastSeq;
      }
      // Never stalls: what was refused as a gap or still in flight is taken on resend.
      await eventually(`frames through ${to} acked`, async () => {
        if (acked >= to) return true;
        const ack = await w.output(runId, numberedFrames(acked + 1, to));
        if (ack.ok) acked = ack.data.lastSeq;
        return acked >= to;
      }, 5000);
      sent.through = to;
    };

    // On node A: assigned, started, lines 1..30.
    const w1 = await ScriptedWorker.connect(a.url, token);
    await w1.hello();
    await eventually('assigned on A', async () => w1.assigned.some((r) => r.runId === runId));
    expect((await w1.started(runId)).ok).toBe(true);
    await stream(w1, 1, 30);

    // To node B (A has not even seen the old socket go yet): lines 31..60.
    const w2 = await ScriptedWorker.connect(b.url, token);
    const [onB] = await w2.hello([runId]);
    expect(onB).toEqual({ runId, keep: true, lastSeq: 30 });
    await eventually('A dropped the old socket', async () => w1.disconnectReason);
    await stream(w2, onB!.lastSeq + 1, 60);

    // Back to node A: its memory of the run from the first visit must not matter.
    const w3 = await ScriptedWorker.connect(a.url, token);
    const [backOnA] = await w3.hello([runId]);
    expect(backOnA).toEqual({ runId, keep: true, lastSeq: 60 });
    await stream(w3, backOnA!.lastSeq + 1, 90);
    expect((await w3.exited(runId, 0)).ok).toBe(true);

    const run = (await api(b.url, admin, 'GET', `/api/task-runs/${runId}`)).body;
    expect(run).toMatchObject({ status: 'succeeded', exitCode: 0 });
    expect(lineNumbers(await recordedText(b.url, admin, runId))).toEqual(range(1, 90));
    expect(w1.cancels.concat(w2.cancels, w3.cancels)).toEqual([]);
    for (const w of [w1, w2, w3]) w.close();
  });
});
