import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LiveSession } from '@handoff/shared';
import { api, eventually } from '../support/clients.js';
import { createTestDatabase, failNthInsert, REDIS_URL, type TestDatabase } from '../support/db.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { ScriptedWorker } from '../support/scripted-worker.js';

// The repeat of a start report that reaches another hub node: node A committed the run's start
// and failed at its web share's insert (a trigger in the test's own database, once), then A went
// away, and the worker, connected to node B, sends the report again. What the repeat still owes
// the run is decided from the database alone (its shares, their `start_requested_at` and worker),
// so B makes the web share and the configured tmate share (LIVE_SESSION_PROVIDER=tmate) and asks
// the worker — now on B — for the tmate share, each once. The scripted worker stands in for tmate
// (no relay is reachable here): it records the share requests it gets and acks them.
describe('a start report repeated on another node after the first failed half-way and went away', () => {
  let db: TestDatabase;
  let a: TestHub;
  let b: TestHub;
  let pgc: pg.Client;
  const workers: ScriptedWorker[] = [];
  /** `share:start` requests, by the node the worker was connected to. */
  const shareRequests: Array<{ node: 'A' | 'B'; sessionId: string; provider: string }> = [];

  const connectWorker = async (node: 'A' | 'B', hub: TestHub, token: string) => {
    const w = await ScriptedWorker.connect(hub.url, token);
    workers.push(w);
    w.socket.on('share:start', (req: { sessionId: string; provider: string }, ack: (r: unknown) => void) => {
      shareRequests.push({ node, sessionId: req.sessionId, provider: req.provider });
      ack({ ok: true, data: {} });
    });
    return w;
  };

  beforeAll(async () => {
    db = await createTestDatabase();
    const env = { LIVE_SESSION_PROVIDER: 'tmate', LIVE_SESSION_ENABLED_DEFAULT: 'true', REDIS_KEY_PREFIX: `handoff-test-${randomBytes(4).toString('hex')}` };
    a = await startTestHub({ databaseUrl: db.url, redisUrl: REDIS_URL, env });
    b = await startTestHub({ databaseUrl: db.url, redisUrl: REDIS_URL, env });
    pgc = new pg.Client({ connectionString: db.url });
    await pgc.connect();
  });
  afterAll(async () => {
    for (const w of workers) w.close();
    await pgc?.end();
    await b?.stop();
    await a?.stop();
    await db?.drop();
  });

  it('node B makes the missing web share and the configured share, asks the worker for it once, and audits each once', async () => {
    const admin = await a.token('admin');
    const token = await a.workerToken(`retry2-${randomBytes(3).toString('hex')}`);
    const onA = await connectWorker('A', a, token);
    await onA.hello([], 4);
    const runId = (await api(a.url, admin, 'POST', '/api/task-runs', { command: { script: 'sleep 600' } })).body.id as string;
    await eventually('the run assigned to the worker on A', async () => onA.assigned.some((x) => x.runId === runId));

    // A's handling fails after the start committed: the next live_sessions insert fails, once.
    const fault = await failNthInsert(pgc, 'live_sessions', 1);
    try {
      expect((await onA.started(runId)).ok).toBe(false);
      expect(await fault.seen()).toBe(1);
    } finally {
      await fault.remove();
    }
    const { rows: [started] } = await pgc.query(`select status from runs where id = $1`, [runId]);
    expect(started.status).toBe('running');
    expect((await pgc.query(`select count(*)::int as n from live_sessions where run_id = $1`, [runId])).rows[0].n).toBe(0);

    // Node A goes away; the worker, on node B, says hello with the run and repeats the report.
    onA.close();
    await a.stop();
    const onB = await connectWorker('B', b, token);
    const verdicts = await onB.hello([runId], 4);
    expect(verdicts.map((v) => v.runId)).toEqual([runId]);
    expect((await onB.started(runId)).ok).toBe(true);

    const sessions = async () => (await api(b.url, admin, 'GET', `/api/task-runs/${runId}`)).body.sessions as LiveSession[];
    await eventually('the configured share asked of the worker on B', async () => shareRequests.some((r) => r.provider === 'tmate'));
    expect((await sessions()).map((s) => [s.provider, s.status]).sort()).toEqual([['tmate', 'STARTING'], ['web', 'READY']]);
    const tmate = (await sessions()).find((s) => s.provider === 'tmate')!;
    expect(shareRequests).toEqual([{ node: 'B', sessionId: tmate.id, provider: 'tmate' }]);
    const { rows } = await pgc.query<{ action: string }>(`select action from audit_events where run_id = $1 and action like 'session.%' order by seq`, [runId]);
    expect(rows.map((r) => r.action)).toEqual(['session.create', 'session.ready', 'session.create']);

    // A third report (its ack lost, say) changes nothing: no share twice, no audit row, no request again.
    const before = (await sessions()).map((s) => [s.id, s.status]).sort();
    const auditBefore = (await pgc.query<{ n: number }>(`select count(*)::int as n from audit_events where run_id = $1`, [runId])).rows[0]!.n;
    expect((await onB.started(runId)).ok).toBe(true);
    await new Promise((r) => setTimeout(r, 300));
    expect((await sessions()).map((s) => [s.id, s.status]).sort()).toEqual(before);
    expect((await pgc.query<{ n: number }>(`select count(*)::int as n from audit_events where run_id = $1`, [runId])).rows[0]!.n).toBe(auditBefore);
    expect(shareRequests).toHaveLength(1);
    await api(b.url, admin, 'POST', `/api/task-runs/${runId}/cancel`, {});
  });
});
