import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { em } from '../../server/src/infra/db/orm.js';
import type { Orm } from '../../server/src/infra/db/orm.js';
import { LOSE_SILENT_WORKERS, SILENT_WORKER_PROBE, STUCK_STARTS } from '../../server/src/sweeper/sweeper-queries.js';
import { HEARD_SHARES_UPDATE } from '../../server/src/workers/presence-queries.js';
import { OLDER_QUEUED } from '../../server/src/workers/scheduler-queries.js';
import { api, eventually } from '../support/clients.js';
import { createTestDatabase, REDIS_URL, type TestDatabase } from '../support/db.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { ScriptedWorker } from '../support/scripted-worker.js';

/**
 * Every SQL statement the hub's ORM sends to PostgreSQL from now on (statements and
 * transaction begins), counted at the connection: what the database is asked, whatever
 * code path asks it.
 */
function statementLog(orm: Orm): { statements: string[]; stop(): void } {
  const conn = orm.em.getDriver().getConnection('write') as unknown as Record<'execute' | 'begin', (...a: unknown[]) => Promise<unknown>>;
  const { execute, begin } = conn;
  const statements: string[] = [];
  conn.execute = function (this: unknown, ...a: unknown[]) {
    statements.push(typeof a[0] === 'string' ? a[0] : String((a[0] as { sql?: string })?.sql ?? a[0]));
    return execute.apply(this, a);
  };
  conn.begin = function (this: unknown, ...a: unknown[]) {
    statements.push('begin');
    return begin.apply(this, a);
  };
  return {
    statements,
    stop() {
      conn.execute = execute;
      conn.begin = begin;
    },
  };
}

/** A plain client on the hub's database, for what the hub cannot be asked (locks, activity). */
async function pgClient(url: string): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  return c;
}

/** Statements of this database waiting on a lock whose text matches `like`. */
async function waitingOnLocks(c: pg.Client, like: string): Promise<number> {
  // Inside a transaction the activity view is a snapshot taken at first read: take a fresh one.
  await c.query('select pg_stat_clear_snapshot()');
  const { rows } = await c.query(
    `select count(*)::int as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock' and query like $1`,
    [like],
  );
  return rows[0].n as number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('one node, many workers: work proportional to what changed', () => {
  let hub: TestHub;
  let admin: string;
  let db: pg.Client;
  const workers: ScriptedWorker[] = [];
  const worker = async (name: string) => {
    const w = await ScriptedWorker.connect(hub.url, await hub.workerToken(`${name}-${randomBytes(3).toString('hex')}`));
    workers.push(w);
    return w;
  };

  beforeAll(async () => {
    hub = await startTestHub({
      env: {
        // Time-driven chores stay out of the counted windows: only what the workers cause is measured.
        SWEEP_INTERVAL: '1h', WEBHOOK_POLL_INTERVAL: '1h', SCHEDULER_RECHECK: '1h', AUDIT_CHECKPOINT_INTERVAL: '1h',
        WORKER_LOST_AFTER: '1h', HEARTBEAT_FLUSH: '400ms', HELLO_CONCURRENCY: '2',
      },
    });
    admin = await hub.token('admin');
    db = await pgClient(hub.db!.url);
  });
  afterEach(async () => {
    for (const w of workers.splice(0)) w.close();
    const rows = await em(hub.orm).execute<{ id: string }[]>(`select id from runs where status in ('queued','assigned','running')`);
    for (const { id } of rows) await api(hub.url, admin, 'POST', `/api/task-runs/${id}/cancel`, {});
    await db.query('rollback').catch(() => {});
  });
  afterAll(async () => {
    await db?.end();
    await hub?.stop();
  });

  it('30 workers say hello at once: at most HELLO_CONCURRENCY (2) are in the database at a time, the others wait their turn, and every one gets its verdict', async () => {
    const sockets: ScriptedWorker[] = [];
    for (let i = 0; i < 30; i++) sockets.push(await worker(`hello-${i}`));
    // Every worker row locked by another transaction: a hello in progress blocks on it, visibly.
    await db.query('begin');
    await db.query(`select id from workers for update`);
    const hellos = sockets.map((w) => w.hello([], 1).then(() => 'ok', (err: Error) => err.message));
    await eventually('two hellos blocked in the database', async () => (await waitingOnLocks(db, '%connected_at%')) === 2, 5000);
    // The bound holds while the other 28 wait (they are not refused: none has answered yet).
    await sleep(500);
    expect(await waitingOnLocks(db, '%connected_at%')).toBe(2);
    const settled = await Promise.race([Promise.all(hellos).then(() => 'all answered'), sleep(100).then(() => 'waiting')]);
    expect(settled).toBe('waiting');
    await db.query('rollback');
    expect(await Promise.all(hellos)).toEqual(Array(30).fill('ok'));
    const { rows } = await db.query(`select count(*)::int as n from workers where name like 'hello-%' and status = 'online'`);
    expect(rows[0].n).toBe(30);
  });

  it('heartbeats are acked without waiting for the database, and written in one UPDATE per flush for all workers heard', async () => {
    const fleet: ScriptedWorker[] = [];
    for (let i = 0; i < 40; i++) fleet.push(await worker(`beat-${i}`));
    for (const w of fleet) await w.hello([], 1);
    await Promise.all(fleet.map((w) => w.heartbeat(0))); // each socket's one-time share check
    await sleep(500); // that beat's flush is done

    // The database cannot take a heartbeat write now (the rows are locked): acks still come at once.
    await db.query('begin');
    await db.query(`select id from workers where name like 'beat-%' for update`);
    const blockedFrom = Date.now();
    const t0 = performance.now();
    const acks = await Promise.all(fleet.map((w) => w.heartbeat(0)));
    const ackMs = performance.now() - t0;
    expect(acks.every((a) => a.ok)).toBe(true);
    expect(ackMs).toBeLessThan(1000);
    await eventually('the flush is blocked on the locked rows', async () => (await waitingOnLocks(db, '%last_heartbeat_at = greatest%')) === 1, 3000);
    await db.query('rollback');
    await eventually('the blocked flush wrote every beat', async () => {
      const { rows } = await db.query(`select count(*)::int as n from workers where name like 'beat-%' and last_heartbeat_at >= $1`, [new Date(blockedFrom - 50)]);
      return rows[0].n === 40;
    }, 5000);

    // 40 workers × 5 beats over ~1.2 s: a handful of UPDATEs, not 200.
    await sleep(500);
    const log = statementLog(hub.orm);
    try {
      let answered = 0;
      for (let round = 0; round < 5; round++) {
        const round0 = await Promise.all(fleet.map((w) => w.heartbeat(0)));
        answered += round0.filter((a) => a.ok).length;
        await sleep(250);
      }
      await sleep(500); // the last flush
      expect(answered).toBe(200);
      const writes = log.statements.filter((s) => /update workers/i.test(s));
      expect(writes.length).toBeGreaterThanOrEqual(2);
      expect(writes.length).toBeLessThanOrEqual(6);
      // Nothing else was asked of the database per beat (no share checks: these workers have none).
      expect(log.statements.filter((s) => !/update workers|update live_sessions|^begin$/i.test(s) && !/^(commit|rollback)/i.test(s))).toEqual([]);
    } finally {
      log.stop();
    }
    const { rows } = await db.query(`select count(*)::int as n from workers where name like 'beat-%' and last_heartbeat_at > now() - interval '2 seconds'`);
    expect(rows[0].n).toBe(40);
  });

  it('an idle scheduling pass issues no query; a created run is claimed by the worker with room at once, in one conditional statement (no older run waits)', async () => {
    const full = await worker('full');
    const free = await worker('free');
    await full.hello([], 1);
    await free.hello([], 1);
    // The first run goes to one of them; that one is then full.
    const first = (await api(hub.url, admin, 'POST', '/api/task-runs', { command: { script: 'sleep 60' }, liveSession: false })).body.id as string;
    await eventually('first run assigned', async () => full.assigned.length + free.assigned.length === 1, 3000);
    const [busy, idle] = full.assigned.length ? [full, free] : [free, full];
    await busy.started(first);
    await busy.heartbeat(1);
    await idle.heartbeat(0);
    await sleep(300);

    const passes0 = { ...hub.scheduler.stats };
    const log = statementLog(hub.orm);
    try {
      // Capacity freed and taken again, over and over: each drop kicks a pass; nothing is queued.
      for (let i = 0; i < 10; i++) {
        await idle.heartbeat(1);
        await idle.heartbeat(0);
      }
      await sleep(100);
      const passes = hub.scheduler.stats.passes - passes0.passes;
      expect(passes).toBeGreaterThanOrEqual(10);
      expect(hub.scheduler.stats.idlePasses - passes0.idlePasses).toBe(passes);
      // The batched heartbeat flush may fall in this window (it is the heartbeats' one write,
      // not the scheduler's); no statement may touch the run queue.
      expect(log.statements.filter((sql) => /\bruns\b/.test(sql))).toEqual([]);
      expect(log.statements.filter((sql) => !/^(begin|commit)$/i.test(sql.trim()) && !/last_heartbeat_at/.test(sql))).toEqual([]);

      // Now a run is created: the creating node offers it at once (no periodic pass: SCHEDULER_RECHECK is 1h).
      const t0 = Date.now();
      const res = await api(hub.url, admin, 'POST', '/api/task-runs', { command: { script: 'sleep 60' }, liveSession: false });
      expect(res.status).toBe(201);
      await eventually('the free worker got it', async () => idle.assigned.some((a) => a.runId === res.body.id), 2000);
      expect(idle.assignedAt.get(res.body.id)! - t0).toBeLessThan(1000);
      expect(busy.assigned.map((a) => a.runId)).toEqual([first]);
      // One claim for the one worker with room (the full one is not asked): the run this node just
      // created, in one conditional statement (no older run queued), without reading the queue's head.
      expect(log.statements.filter((s) => /from runs where status = 'queued' order by/.test(s))).toHaveLength(0);
      expect(log.statements.filter((s) => /with room as/.test(s))).toHaveLength(1);
      expect(log.statements.filter((s) => /with room as/.test(s) && s.includes(OLDER_QUEUED))).toHaveLength(1);
    } finally {
      log.stop();
    }
  });

  it('a run created while an older one waits does not pass it: its claim finds the older run, which is read and taken first', async () => {
    // No worker yet: both wait, the newer one last created on this node (the claim's likely head).
    const older = (await api(hub.url, admin, 'POST', '/api/task-runs', { command: { script: 'sleep 60' }, liveSession: false })).body.id as string;
    const newer = (await api(hub.url, admin, 'POST', '/api/task-runs', { command: { script: 'sleep 60' }, liveSession: false })).body.id as string;
    const log = statementLog(hub.orm);
    try {
      const w = await worker('fifo');
      await w.hello([], 1);
      await eventually('a run assigned', async () => w.assigned.length === 1, 3000);
      await sleep(200);
      expect(w.assigned.map((a) => a.runId)).toEqual([older]);
      // The newer run was tried first and not taken (the older one waited), then the head was read and claimed.
      expect(log.statements.filter((s) => /with room as/.test(s) && s.includes(OLDER_QUEUED))).toHaveLength(1);
      expect(log.statements.filter((s) => /from runs where status = 'queued' order by/.test(s))).toHaveLength(1);
      expect(log.statements.filter((s) => /with room as/.test(s) && !s.includes(OLDER_QUEUED))).toHaveLength(1);
    } finally {
      log.stop();
    }
    const { rows } = await db.query('select id, status, worker_id from runs where id = any($1) order by created_at', [[older, newer]]);
    expect(rows.map((r) => r.status)).toEqual(['assigned', 'queued']);
    expect(rows[1].worker_id).toBeNull();
  });
});

// Two nodes on one database and Redis. Node B holds its heartbeats (HEARTBEAT_FLUSH 1h): they
// reach the database only when the sweeping node A, finding its workers silent there, asks
// every node to flush before judging.
describe('loss is judged from what a node received, not from what it wrote', () => {
  let dbase: TestDatabase;
  let a: TestHub;
  let b: TestHub;
  let db: pg.Client;
  const LOST_AFTER_MS = 1500;

  beforeAll(async () => {
    dbase = await createTestDatabase();
    const env = { REDIS_KEY_PREFIX: `handoff-test-${randomBytes(4).toString('hex')}`, WORKER_LOST_AFTER: `${LOST_AFTER_MS}ms`, WORKER_RECLAIM_GRACE: '60s', SWEEP_INTERVAL: '100ms' };
    a = await startTestHub({ databaseUrl: dbase.url, redisUrl: REDIS_URL, env });
    // A takes the sweeper lease first; B would have to wait for it to lapse.
    await sleep(500);
    b = await startTestHub({ databaseUrl: dbase.url, redisUrl: REDIS_URL, env: { ...env, HEARTBEAT_FLUSH: '1h' } });
    db = await pgClient(dbase.url);
  });
  afterAll(async () => {
    await db?.end();
    await b?.stop();
    await a?.stop();
    await dbase?.drop();
  });

  it('a worker heartbeating to a node whose flush is delayed past WORKER_LOST_AFTER is never declared lost; a silent one is', async () => {
    const alive = await ScriptedWorker.connect(b.url, await a.workerToken('delayed-alive'));
    const silent = await ScriptedWorker.connect(b.url, await a.workerToken('delayed-silent'));
    try {
      await alive.hello([], 1);
      await silent.hello([], 1);
      let unanswered = 0;
      let maxDbAgeMs = 0;
      const statuses = new Set<string>();
      const until = Date.now() + 4 * LOST_AFTER_MS;
      let nextBeat = 0;
      while (Date.now() < until) {
        if (Date.now() >= nextBeat) {
          nextBeat = Date.now() + 300;
          void alive.heartbeat(0).then((ack) => (unanswered += ack.ok ? 0 : 1), () => (unanswered += 1));
        }
        const { rows } = await db.query(`select status, extract(epoch from (now() - last_heartbeat_at)) * 1000 as age from workers where name = 'delayed-alive'`);
        statuses.add(rows[0].status);
        maxDbAgeMs = Math.max(maxDbAgeMs, Number(rows[0].age));
        await sleep(25);
      }
      // The race happened: the database's view of the worker was older than WORKER_LOST_AFTER
      // (B wrote nothing on its own), yet the sweeper had B flush and found it heard.
      expect(maxDbAgeMs).toBeGreaterThan(LOST_AFTER_MS * 0.9);
      expect([...statuses]).toEqual(['online']);
      expect(unanswered).toBe(0);
      const { rows } = await db.query(`select status from workers where name = 'delayed-silent'`);
      expect(rows[0].status).toBe('lost');
    } finally {
      alive.close();
      silent.close();
    }
  });
});

// What heartbeats, the loss sweep and the scheduler ask is served by migration 0011's indexes
// whatever the history: proven with EXPLAIN on tables holding thousands of rows of finished
// runs, ended sessions and long-lost workers (a planner scans a small table anyway).
describe('heartbeat, loss and queue queries: indexed', () => {
  let hub: TestHub;
  const plan = async (sql: string, params: unknown[] = []) =>
    (await em(hub.orm).execute<{ 'QUERY PLAN': string }[]>(`explain ${sql}`, params)).map((r) => r['QUERY PLAN']).join('\n');

  beforeAll(async () => {
    hub = await startTestHub({ env: { SWEEP_INTERVAL: '1h', SCHEDULER_RECHECK: '1h' } });
    const fill = [
      // 20,000 workers, 200 of them live.
      `insert into workers (id, name, capacity, status, last_heartbeat_at, created_at)
       select gen_random_uuid(), 'fill-w-' || g, 2, case when g % 100 = 0 then 'online' else 'lost' end, now() - make_interval(secs => g % 600), now()
         from generate_series(1, 20000) g`,
      // 60,000 runs, 30 of them queued; the others finished on some worker.
      `insert into runs (id, title, command, status, created_by, worker_id, live_session_enabled, created_at)
       select gen_random_uuid(), 'fill', '{"argv":["true"]}', case when g % 2000 = 0 then 'queued' else 'succeeded' end, 'fill',
              case when g % 2000 = 0 then null else (select id from workers where name = 'fill-w-' || (g % 20000 + 1)) end, true, now() - make_interval(secs => g)
         from generate_series(1, 60000) g`,
      // One session per run: those of finished runs ENDED.
      `insert into live_sessions (id, run_id, provider, status, worker_id, correlation_id, created_by, created_at, expires_at)
       select gen_random_uuid(), r.id, 'web', case when r.status = 'queued' then 'STARTING' else 'ENDED' end, r.worker_id, gen_random_uuid(), 'fill', r.created_at, now()
         from runs r where r.title = 'fill'`,
      'analyze workers', 'analyze runs', 'analyze live_sessions',
    ];
    for (const sql of fill) await em(hub.orm).execute(sql);
  }, 120_000);
  afterAll(async () => {
    await hub?.stop();
  });

  it("the flush's share update finds each heard worker's active sessions through live_sessions_worker_active_idx", async () => {
    const at = new Date().toISOString();
    const ids = (await em(hub.orm).execute<{ id: string }[]>(`select id from workers where status = 'online' limit 50`)).map((r) => ({ id: r.id, at }));
    const p = await plan(HEARD_SHARES_UPDATE, [JSON.stringify(ids)]);
    expect(p).toMatch(/Index (Only )?Scan.* using live_sessions_worker_active_idx|Bitmap Index Scan on live_sessions_worker_active_idx/);
    expect(p).not.toMatch(/Seq Scan on live_sessions/);
  });

  it("the sweeper's silent-worker probe and loss update read live workers only, through workers_heard_idx", async () => {
    // The cutoff is the sweeper's clock − WORKER_LOST_AFTER, a parameter like any other.
    const cutoff = new Date(Date.now() - 9000);
    for (const sql of [SILENT_WORKER_PROBE, LOSE_SILENT_WORKERS]) {
      const p = await plan(sql, [cutoff]);
      expect(p).toMatch(/Index (Only )?Scan.* using workers_heard_idx|Bitmap Index Scan on workers_heard_idx/);
      expect(p).not.toMatch(/Seq Scan on workers/);
    }
  });

  it("the sweeper's stuck-start check reads active sessions only, through a partial index of them", async () => {
    // The cutoff is the sweeper's clock − (LIVE_PROVIDER_START_TIMEOUT + 5 s), a parameter like any other.
    const p = await plan(STUCK_STARTS, [new Date(Date.now() - 20_000)]);
    expect(p).toMatch(/Index (Only )?Scan.* using live_sessions_(one_active|worker_active)_idx|Bitmap Index Scan on live_sessions_(one_active|worker_active)_idx/);
    expect(p).not.toMatch(/Seq Scan on live_sessions/);
  });

  it("the scheduler's claim takes the oldest queued run through runs_queue_idx", async () => {
    const p = await plan(`select id from runs where status = 'queued' order by created_at, id limit 1 for update skip locked`);
    expect(p).toMatch(/Index Scan using runs_queue_idx/);
    expect(p).not.toMatch(/Seq Scan on runs/);
  });

  it("claiming the run just created checks for an older queued one through runs_queue_idx", async () => {
    const [newest] = await em(hub.orm).execute<{ id: string }[]>(`select id from runs where status = 'queued' order by created_at desc limit 1`);
    const p = await plan(`select id from runs where id = ? and status = 'queued' and not exists (${OLDER_QUEUED})`, [newest!.id]);
    expect(p).toMatch(/Index (Only )?Scan using runs_queue_idx on runs older/);
    expect(p).not.toMatch(/Seq Scan on runs/);
  });
});
