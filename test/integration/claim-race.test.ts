import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { em } from '../../server/src/infra/db/orm.js';
import { api, eventually } from '../support/clients.js';
import { createTestDatabase, REDIS_URL, type TestDatabase } from '../support/db.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { ScriptedWorker } from '../support/scripted-worker.js';

/**
 * The claim (issue 10 item 6) is a read of the queue's head, then one conditional statement that
 * takes it with its `run.assign` row (for a run the node just created, the statement alone, on the
 * condition that no older run waits). Two nodes claiming at once read the same head: one wins,
 * the other's statement changes nothing and it reads again. Every run goes to exactly one
 * worker, with one audit row, whatever the interleaving. The hubs run in this process, so every
 * claim statement either node sends is counted.
 */
describe('two nodes claiming from one queue', () => {
  let db: TestDatabase;
  let a: TestHub;
  let b: TestHub;
  let operator: string;
  const workers: ScriptedWorker[] = [];
  const names = new Map<ScriptedWorker, string>();
  let claims = 0;
  let restore: () => void = () => undefined;

  beforeAll(async () => {
    const query = pg.Client.prototype.query as (...args: unknown[]) => unknown;
    pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
      const text = typeof args[0] === 'string' ? args[0] : (args[0] as { text?: string })?.text;
      if (typeof text === 'string' && /with room as/.test(text)) claims += 1;
      return query.apply(this, args);
    } as typeof pg.Client.prototype.query;
    restore = () => (pg.Client.prototype.query = query as typeof pg.Client.prototype.query);
    db = await createTestDatabase();
    const env = { REDIS_KEY_PREFIX: `handoff-test-${randomBytes(4).toString('hex')}` };
    a = await startTestHub({ databaseUrl: db.url, redisUrl: REDIS_URL, env });
    b = await startTestHub({ databaseUrl: db.url, redisUrl: REDIS_URL, env });
    operator = await a.token('operator');
    // Room for everything on every worker: a claim that takes nothing lost a race, never met a full worker.
    for (const hub of [a, b]) {
      for (let i = 0; i < 3; i++) {
        const name = `race-${randomBytes(3).toString('hex')}`;
        const w = await ScriptedWorker.connect(hub.url, await hub.workerToken(name));
        await w.hello([], 100);
        workers.push(w);
        names.set(w, name);
      }
    }
  });
  afterAll(async () => {
    restore();
    for (const w of workers) w.close();
    await a?.stop();
    await b?.stop();
    await db?.drop();
  });

  it('every run goes to exactly one worker with one run.assign row; a claim that lost re-reads the queue', async () => {
    let total = 0;
    let raced = false;
    // Until a round shows the race (a claim that took nothing): at most 5 rounds of 20 runs.
    for (let round = 0; round < 5 && !raced; round++) {
      const claimsBefore = claims;
      const created = await Promise.all(Array.from({ length: 20 }, (_, i) =>
        api((i % 2 ? b : a).url, operator, 'POST', '/api/task-runs', { command: { script: 'sleep 60' }, liveSession: false })));
      expect(created.every((r) => r.status === 201)).toBe(true);
      total += created.length;
      await eventually('every run assigned', async () => workers.reduce((n, w) => n + w.assigned.length, 0) >= total, 10_000);
      const claimed = claims - claimsBefore;
      console.log(`round ${round}: 20 runs, ${claimed} claim statements`);
      raced = claimed > created.length;
    }
    expect(raced).toBe(true);

    // Exactly once: no run pushed to two workers, none left behind.
    const pushed = workers.flatMap((w) => w.assigned.map((x) => x.runId));
    expect(pushed).toHaveLength(total);
    expect(new Set(pushed).size).toBe(total);
    const rows = await em(a.orm).execute<{ id: string; status: string; worker: string; assigns: number }[]>(
      `select r.id, r.status, w.name as worker, (select count(*)::int from audit_events e where e.run_id = r.id and e.action = 'run.assign') as assigns
         from runs r join workers w on w.id = r.worker_id`,
    );
    expect(rows).toHaveLength(total);
    for (const r of rows) {
      expect(r.status).toBe('assigned');
      expect(r.assigns).toBe(1);
      // The worker the database names is the one that was pushed the run.
      const holder = workers.find((w) => w.assigned.some((x) => x.runId === r.id))!;
      expect(names.get(holder)).toBe(r.worker);
    }
  });
});
