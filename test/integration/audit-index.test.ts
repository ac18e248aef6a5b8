import { systemClock } from '@handoff/shared';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { em } from '../../server/src/infra/db/orm.js';
import { appendAudit, SYSTEM } from '../../server/src/audit/audit-append.js';
import { listAudit } from '../../server/src/audit/audit-log.js';
import { AuditAnchor, loadAuditSigningKey } from '../../server/src/audit/audit-anchor.js';
import { CHECKPOINT_BATCH, GROWN_CHAINS_SQL } from '../../server/src/audit/audit-anchor-queries.js';
import { randomBytes } from 'node:crypto';
import { startTestHub, type TestHub } from '../support/hub.js';

// The audit chain's hot queries use an index whatever the history: proven with EXPLAIN on a
// table holding 60,000 rows of other runs (the planner would scan a small table anyway).
describe('audit log: indexed hot queries', () => {
  let hub: TestHub;
  const runId = randomUUID();

  beforeAll(async () => {
    // The hub's own sweeper stays out of the way: the last test drives checkpoints itself.
    hub = await startTestHub({ env: { AUDIT_CHECKPOINT_INTERVAL: '1h' } });
    await em(hub.orm).execute(
      `insert into audit_events (id, run_id, seq, correlation_id, actor_type, actor_id, action, result, at, metadata, prev_hash, hash)
       select gen_random_uuid(), ('00000000-0000-4000-8000-' || lpad(to_hex(g / 100), 12, '0'))::uuid, g % 100 + 1, gen_random_uuid(),
              'system', 'hub', 'bench.fill', 'ok', now() - make_interval(secs => g), '{}'::jsonb, null, md5(g::text)
         from generate_series(0, 59999) g`,
    );
    await em(hub.orm).execute('analyze audit_events');
  });
  afterAll(async () => {
    await hub?.stop();
  });

  const plan = async (sql: string, params: unknown[]) =>
    (await em(hub.orm).execute<{ 'QUERY PLAN': string }[]>(`explain ${sql}`, params)).map((r) => r['QUERY PLAN']).join('\n');

  it('the previous-row query of an append, for a run and for the global chain, is an index scan', async () => {
    const forRun = await plan('select hash, seq from audit_events where run_id = ? order by seq desc limit 1', [runId]);
    expect(forRun).toMatch(/Index (Only )?Scan.* using audit_events_run_seq_idx/);
    expect(forRun).not.toMatch(/Seq Scan/);
    const global = await plan('select hash, seq from audit_events where run_id is null order by seq desc limit 1', []);
    expect(global).toMatch(/Index (Only )?Scan.* using audit_events_run_seq_idx/);
    expect(global).not.toMatch(/Seq Scan/);
  });

  it('a page of a run’s events is an index scan, and appends chain correctly on the big table', async () => {
    const page = await plan('select * from audit_events where run_id = ? and seq > ? order by seq asc limit 101', [runId, 0]);
    expect(page).toMatch(/Index Scan.* using audit_events_run_seq_idx/);
    expect(page).not.toMatch(/Seq Scan/);
    for (let i = 0; i < 3; i++) await em(hub.orm).transactional((tx) => appendAudit(tx, { runId, actor: SYSTEM, action: 'test.append', metadata: { i } }, new Date()));
    const { events } = await listAudit(em(hub.orm), runId, { limit: 10 });
    expect(events.map((e) => [e.seq, e.metadata.i])).toEqual([[1, 0], [2, 1], [3, 2]]);
    expect(events[1]!.prevHash).toBe(events[0]!.hash);
  });

  it('the sweeper finds grown chains from recent rows only, through audit_events_at_idx', async () => {
    // The fill spreads 60,000 rows over the last ~17 hours; a sweep looks at the last minutes.
    const recent = await plan(GROWN_CHAINS_SQL, [new Date(Date.now() - 10 * 60_000)]);
    expect(recent).toMatch(/Index (Only )?Scan (using|on) audit_events_at_idx/);
    expect(recent).not.toMatch(/Seq Scan on audit_events/);
  });

  it('a backlog (600 runs never checkpointed) drains oldest first in batches, then sweeps find nothing', async () => {
    const anchor = new AuditAnchor(hub.orm, loadAuditSigningKey({ configured: randomBytes(32).toString('hex'), dataDir: '/nonexistent' }), hub.log, systemClock, { intervalMs: 0 });
    const count = async () => (await em(hub.orm).execute<{ n: number }[]>(`select count(*)::int as n from audit_checkpoints where source = 'sweep'`))[0]!.n;
    expect(await anchor.checkpointGrown()).toBe(CHECKPOINT_BATCH);
    // The oldest runs went first: the newest fill run (rows 0–99, the most recent) is not among them.
    const newestFill = '00000000-0000-4000-8000-000000000000';
    expect((await em(hub.orm).execute(`select 1 from audit_checkpoints where run_id = ?`, [newestFill])).length).toBe(0);
    expect(await anchor.checkpointGrown()).toBe(601 - CHECKPOINT_BATCH); // the rest, and this file's own run
    expect(await count()).toBe(601);
    const [head] = await em(hub.orm).execute<{ seq: number }[]>(`select seq from audit_checkpoints where run_id = ?`, [runId]);
    expect(head!.seq).toBe(3);
    expect(await anchor.checkpointGrown()).toBe(0);
    await em(hub.orm).transactional((tx) => appendAudit(tx, { runId, actor: SYSTEM, action: 'test.append', metadata: { i: 3 } }, new Date()));
    expect(await anchor.checkpointGrown()).toBe(1);
    expect(await count()).toBe(602);
  });
});
