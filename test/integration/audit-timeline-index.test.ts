import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { em } from '../../server/src/infra/db/orm.js';
import { FRAMES_AT_SQL, frameSeqsAt } from '../../server/src/audit/audit-timeline.js';
import { api } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';

// The timeline's "frame at this row's time" lookup descends recording_chunks_run_t_idx, so a
// long run (here 60,000 frames, one per 50 ms) costs one index descent per row, not a scan.
describe('audit timeline: the frame current at a row, by index', () => {
  let hub: TestHub;
  let runId: string;
  const started = new Date('2026-12-02T06:00:00.000Z');

  beforeAll(async () => {
    hub = await startTestHub();
    const operator = await hub.token('operator');
    runId = (await api(hub.url, operator, 'POST', '/api/task-runs', { command: { script: 'true' } })).body.id;
    await em(hub.orm).execute('update runs set started_at = ? where id = ?', [started, runId]);
    await em(hub.orm).execute(`insert into recording_chunks (run_id, seq, t, data) select ?::uuid, g, (g - 1) * 50, 'x' from generate_series(1, 60000) g`, [runId]);
    await em(hub.orm).execute('analyze recording_chunks');
  });
  afterAll(async () => {
    await hub?.stop();
  });

  it('maps each row to the newest frame at its time', async () => {
    const at = (ms: number) => new Date(started.getTime() + ms).toISOString();
    const row = (seq: number, ms: number) => ({ seq, at: at(ms) }) as never;
    // t = 0 is frame 1; 1,000 ms is frame 21; between frames the earlier one is current.
    expect(await frameSeqsAt(em(hub.orm), runId, [row(1, -5), row(2, 0), row(3, 1000), row(4, 1049), row(5, 10_000_000)])).toEqual({ 2: 1, 3: 21, 4: 21, 5: 60000 });
  });

  it('is an index scan of recording_chunks_run_t_idx', async () => {
    const plan = (await em(hub.orm).execute<{ 'QUERY PLAN': string }[]>(`explain ${FRAMES_AT_SQL}`, [JSON.stringify([{ seq: 1, at: new Date().toISOString() }]), runId])).map((r) => r['QUERY PLAN']).join('\n');
    expect(plan).toMatch(/Index (Only )?Scan Backward using recording_chunks_run_t_idx/);
    expect(plan).not.toMatch(/Seq Scan on recording_chunks/);
  });
});
