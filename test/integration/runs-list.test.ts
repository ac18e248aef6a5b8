import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Frame, listRunsQuerySchema } from '@handoff/shared';
import { em } from '../../server/src/infra/db/orm.js';
import { listRunsSql } from '../../server/src/runs/run-queries.js';
import { api, connect, emitAck } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { startWorker, type WorkerProcess } from '../support/worker.js';

// GET /api/task-runs filters against a real hub, a real worker and tmux: search by title, label,
// creator and worker; status, control state, needs-operator and live-share filters; names.
describe('runs list: search and filters', () => {
  let hub: TestHub;
  let worker: WorkerProcess;
  let alice: string;
  let bob: string;
  let bobName: string;
  const ids: Record<string, string> = {};

  const list = async (query: string) => {
    const res = await api(hub.url, alice, 'GET', `/api/task-runs?${query}`);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    return (res.body.runs as { id: string }[]).map((r) => r.id);
  };
  const named = (...keys: string[]) => keys.map((k) => ids[k]!).sort();

  beforeAll(async () => {
    hub = await startTestHub();
    alice = (await hub.auth.addUser(`alice-${process.pid}`, 'operator')).token;
    bobName = `bob-the-builder-${process.pid}`;
    bob = (await hub.auth.addUser(bobName, 'operator')).token;
    worker = startWorker({ hubUrl: hub.url, token: await hub.workerToken(`list-worker-${process.pid}`), capacity: 3 });
    const create = async (token: string, body: object) => {
      const res = await api(hub.url, token, 'POST', '/api/task-runs', body);
      expect(res.status, JSON.stringify(res.body)).toBe(201);
      return res.body.id as string;
    };
    ids.asks = await create(alice, { command: { script: 'handoff-agent request-operator "stuck on prod"; while true; do sleep 0.2; done' }, title: 'deploy api', labels: { env: 'prod' } });
    ids.quiet = await create(alice, { command: { script: 'while true; do sleep 0.2; done' }, title: 'build docs', labels: { env: 'staging' }, liveSession: false });
    ids.done = await create(bob, { command: { script: 'true' }, title: 'cleanup 100%_done' });
    // Settled: the asking run flagged with a READY web share, the quiet one running, the last one finished.
    const settled = async () => {
      const runs = (await api(hub.url, alice, 'GET', '/api/task-runs')).body.runs as { id: string; status: string; needsOperator: unknown; sessions: { status: string }[] }[];
      const by = (id: string) => runs.find((r) => r.id === id)!;
      return by(ids.asks!).needsOperator !== null && by(ids.asks!).sessions.some((s) => s.status === 'READY') && by(ids.quiet!).status === 'running' && by(ids.done!).status === 'succeeded';
    };
    const deadline = Date.now() + 30_000;
    while (!(await settled())) {
      if (Date.now() > deadline) throw new Error('the runs never settled');
      await new Promise((r) => setTimeout(r, 250));
    }
  }, 60_000);
  afterAll(async () => {
    await worker?.stop();
    await hub?.stop();
  });

  it('searches titles, labels (key, value, key:value), creators and workers, case-insensitively', async () => {
    expect(await list('q=DEPLOY')).toEqual(named('asks'));
    expect(await list('q=prod')).toEqual(named('asks'));
    expect(await list('q=env%3Astaging')).toEqual(named('quiet'));
    expect((await list('q=env')).sort()).toEqual(named('asks', 'quiet'));
    expect(await list(`q=${encodeURIComponent(bobName.toUpperCase())}`)).toEqual(named('done'));
    expect((await list(`q=list-worker-${process.pid}`)).sort()).toEqual(named('asks', 'done', 'quiet'));
    expect(await list(`q=${ids.quiet!.slice(0, 13)}`)).toEqual(named('quiet'));
    expect(await list('q=nothing-like-this')).toEqual([]);
    // LIKE wildcards are literal text: "%" matches only the title containing a percent sign.
    expect(await list('q=%25')).toEqual(named('done'));
    expect(await list('q=0%25_d')).toEqual(named('done'));
    expect(await list('q=_')).toEqual(named('done'));
    // Blank search: no filter.
    expect((await list('q=%20%20')).sort()).toEqual(named('asks', 'done', 'quiet'));
  });

  it('filters by status (one or several), control state, needs-operator and live share', async () => {
    expect(await list('status=succeeded')).toEqual(named('done'));
    expect((await list('status=running,assigned')).sort()).toEqual(named('asks', 'quiet'));
    expect((await list('status=running,running')).sort()).toEqual(named('asks', 'quiet'));
    expect(await list('control=paused,operator')).toEqual([]);
    expect((await list('control=agent')).sort()).toEqual(named('asks', 'done', 'quiet'));
    expect(await list('needsOperator=true')).toEqual(named('asks'));
    expect((await list('needsOperator=false')).sort()).toEqual(named('done', 'quiet'));
    expect(await list('share=web')).toEqual(named('asks'));
    expect(await list('share=any')).toEqual(named('asks'));
    expect(await list('share=tmate')).toEqual([]);
    expect((await list('share=none')).sort()).toEqual(named('done', 'quiet'));
    // Filters combine with AND, and page with the cursor like the unfiltered list.
    expect(await list('status=running&share=none&q=docs')).toEqual(named('quiet'));
    const first = await api(hub.url, alice, 'GET', '/api/task-runs?status=running,succeeded&limit=2');
    expect(first.body.runs).toHaveLength(2);
    const second = await api(hub.url, alice, 'GET', `/api/task-runs?status=running,succeeded&limit=2&cursor=${first.body.nextCursor}`);
    expect(second.body.nextCursor).toBeNull();
    expect([...first.body.runs, ...second.body.runs].map((r: { id: string }) => r.id).sort()).toEqual(named('asks', 'done', 'quiet'));
  });

  it('names the creator and the worker of every run', async () => {
    const res = await api(hub.url, alice, 'GET', '/api/task-runs');
    const done = (res.body.runs as { id: string; createdByName: string; workerName: string }[]).find((r) => r.id === ids.done)!;
    expect(done).toMatchObject({ createdByName: bobName, workerName: `list-worker-${process.pid}` });
    const one = await api(hub.url, alice, 'GET', `/api/task-runs/${ids.done}`);
    expect(one.body).toMatchObject({ createdByName: bobName, workerName: `list-worker-${process.pid}` });
  });

  it('term:subscribe with tailFrames sends only the newest frames (a wall tile); bad bounds are refused', async () => {
    const id = await (async () => {
      const res = await api(hub.url, alice, 'POST', '/api/task-runs', { command: { script: 'for i in $(seq 1 40); do echo "line $i"; sleep 0.05; done; sleep 30' }, title: 'tail' });
      return res.body.id as string;
    })();
    const socket = await connect(hub.url, '/dashboard', alice);
    try {
      let full: Frame[] = [];
      const deadline = Date.now() + 30_000;
      while (!full.map((f) => f.data).join('').includes('line 40')) {
        if (Date.now() > deadline) throw new Error('the run never printed its 40 lines');
        await new Promise((r) => setTimeout(r, 250));
        const ack = await emitAck<{ frames: Frame[] }>(socket, 'term:subscribe', { runId: id });
        if (ack.ok) full = ack.data.frames;
      }
      expect(full.length).toBeGreaterThan(5);
      const bounded = await emitAck<{ frames: Frame[]; truncated: boolean }>(socket, 'term:subscribe', { runId: id, tailFrames: 3 });
      expect(bounded.ok && bounded.data.truncated).toBe(true);
      expect(bounded.ok && bounded.data.frames.map((f) => f.seq)).toEqual(full.slice(-3).map((f) => f.seq));
      const all = await emitAck<{ frames: Frame[]; truncated: boolean }>(socket, 'term:subscribe', { runId: id, tailFrames: 2000 });
      expect(all.ok && all.data.frames.length).toBe(full.length);
      for (const bad of [0, 2001, 1.5, -1, '3']) {
        const ack = await emitAck(socket, 'term:subscribe', { runId: id, tailFrames: bad });
        expect(ack.ok, String(bad)).toBe(false);
      }
    } finally {
      socket.close();
      await api(hub.url, alice, 'POST', `/api/task-runs/${id}/cancel`, {});
    }
  }, 60_000);

  it('refuses bad filters with a clear VALIDATION error', async () => {
    for (const [query, field] of [
      ['status=bogus', 'status'],
      ['status=running,', 'status'],
      ['status=running&status=failed', 'status'],
      ['control=driving', 'control'],
      ['needsOperator=yes', 'needsOperator'],
      ['share=ssh', 'share'],
      ['q=a%0Ab', 'q'],
      [`q=${'x'.repeat(201)}`, 'q'],
      ['sort=title', ''],
    ] as const) {
      const res = await api(hub.url, alice, 'GET', `/api/task-runs?${query}`);
      expect(res.status, query).toBe(400);
      expect(res.body.error.code, query).toBe('VALIDATION');
      expect(res.body.error.message, query).toContain(field);
    }
  });

  it('the needs-operator read and the plain page use an index on a big runs table', async () => {
    const tx = em(hub.orm);
    await tx.execute(
      `insert into runs (id, title, command, status, created_by, control_state, live_session_enabled, created_at, needs_operator_reason, needs_operator_at)
       select gen_random_uuid(), 'filler ' || g, '{"script":"true"}'::jsonb, case when g % 10 = 0 then 'running' else 'succeeded' end, 'bench', 'agent', false,
              now() - make_interval(secs => g), case when g % 5000 = 0 then 'help' end, case when g % 5000 = 0 then now() end
         from generate_series(1, 60000) g`,
    );
    await tx.execute('analyze runs');
    const plan = async (query: Record<string, string>) => {
      const { sql, params } = listRunsSql(listRunsQuerySchema.parse(query));
      return (await tx.execute<{ 'QUERY PLAN': string }[]>(`explain ${sql}`, params)).map((r) => r['QUERY PLAN']).join('\n');
    };
    const flagged = await plan({ needsOperator: 'true' });
    expect(flagged).toMatch(/Index (Only )?Scan using runs_needs_operator_idx/);
    expect(flagged).not.toMatch(/Seq Scan/);
    const newest = await plan({});
    expect(newest).toMatch(/Index (Only )?Scan using runs_created_idx/);
    expect(newest).not.toMatch(/Seq Scan/);
    // The list still answers right over the filler.
    expect(await list('needsOperator=true&q=deploy')).toEqual(named('asks'));
    await tx.execute(`delete from runs where created_by = 'bench'`);
  }, 60_000);
});
