import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LiveSessionSchema, RunSchema, WriteGrantSchema } from '../../server/src/infra/db/entities.js';
import { em, rowOf } from '../../server/src/infra/db/orm.js';
import { RUN_VIEW_COLUMNS, type RawRunForView } from '../../server/src/runs/run-queries.js';
import { api } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { ScriptedWorker } from '../support/scripted-worker.js';

/**
 * `rowOf` replaced `{ ...Em#map(…) }` on the hot paths (a run's view, the scheduler's claim, the
 * start web share) to skip building a managed entity. It must give the very same data: the
 * run's row as the database returns it (timestamps, JSON columns, nulls) and the sessions and
 * grants `run_view_extras` returns as JSON (timestamps as strings there).
 */
describe('rowOf: a row as the entity’s data, the same as Em#map gave', () => {
  let hub: TestHub;
  let runId: string;

  beforeAll(async () => {
    hub = await startTestHub();
    const operator = await hub.token('operator');
    const worker = await ScriptedWorker.connect(hub.url, await hub.workerToken(`rows-${randomBytes(3).toString('hex')}`));
    await worker.hello([], 2);
    const created = await api(hub.url, operator, 'POST', '/api/task-runs', {
      title: 'rows',
      command: { argv: ['sh', '-c', 'sleep 600'] },
      env: { LANG: 'C.UTF-8', QUOTE: 'a "b" \\ c' },
      labels: { team: 'ops', tier: 'gold ☃' },
    });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    runId = created.body.id as string;
    const deadline = Date.now() + 10_000;
    while (!worker.assigned.some((a) => a.runId === runId) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect((await worker.started(runId)).ok).toBe(true);
    // A takeover: a control change (JSON `control_by`, a timestamp) and an active write grant.
    const takeover = await api(hub.url, operator, 'POST', `/api/task-runs/${runId}/control`, { action: 'takeover', mode: 'hard' });
    expect(takeover.status).toBe(200);
    worker.close();
  });
  afterAll(async () => {
    await hub?.stop();
  });

  it('the run, its web share and its write grant map to the same values, dates as dates', async () => {
    const tx = em(hub.orm);
    const [raw] = await tx.execute<RawRunForView[]>(`select ${RUN_VIEW_COLUMNS} from runs r where r.id = ?`, [runId]);
    const { view_extras: extras, ...row } = raw!;
    expect(extras.sessions).toHaveLength(1);
    expect(extras.grants).toHaveLength(1);

    const mapped = rowOf(tx, RunSchema, row);
    const managed = { ...em(hub.orm).map(RunSchema, row) };
    expect(mapped).toEqual(managed);
    expect(mapped.createdAt).toBeInstanceOf(Date);
    expect(mapped.controlChangedAt).toBeInstanceOf(Date);
    expect(mapped.endedAt).toBeNull();
    expect(mapped.labels).toEqual({ team: 'ops', tier: 'gold ☃' });
    expect(mapped.env).toMatchObject({ QUOTE: 'a "b" \\ c' });
    expect(mapped.controlBy).toEqual(expect.objectContaining({ name: expect.any(String) }));
    expect(mapped.liveSessionEnabled).toBe(true);

    for (const [schema, json] of [[LiveSessionSchema, extras.sessions[0]], [WriteGrantSchema, extras.grants[0]]] as const) {
      const fromJson = rowOf(tx, schema as typeof LiveSessionSchema, json as Record<string, unknown>);
      expect(fromJson).toEqual({ ...em(hub.orm).map(schema as typeof LiveSessionSchema, json as Record<string, unknown>) });
      // Timestamps come as strings in JSON: both give dates, to the millisecond.
      expect(typeof (json as Record<string, unknown>).created_at).toBe('string');
      expect(fromJson.createdAt).toBeInstanceOf(Date);
      expect(fromJson.createdAt.getTime()).toBe(new Date((json as Record<string, string>).created_at!).getTime());
    }
  });
});
