import { randomUUID } from 'node:crypto';
import { tmpdir } from 'node:os';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { migrations } from '../../migrations/index.js';
import { appendAudit, auditAppendCall, SYSTEM } from '../../server/src/audit/audit-append.js';
import { verifyAudit } from '../../server/src/audit/audit-log.js';
import { em, openDatabase, type Orm } from '../../server/src/infra/db/orm.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';

// Migration 0017 renames control_events → audit_events on a database that already holds a
// history: every row must come through byte for byte, the chains must still verify, and new
// appends must chain onto the old rows.
describe('migration 0017: the audit table becomes audit_events, history intact', () => {
  let db: TestDatabase | undefined;
  let orm: Orm | undefined;
  afterAll(async () => {
    await orm?.close();
    await db?.drop();
  });

  it('keeps every row and its chain valid, and appends chain onto the old rows', async () => {
    const at = migrations.findIndex((m) => m.name === '0017-audit-events');
    expect(at).toBeGreaterThan(0);
    const rename = migrations[at]!;
    db = await createTestDatabase();
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    try {
      for (const m of migrations.slice(0, at)) for (const stmt of m.up) await client.query(stmt);
      // A history written the way the previous release wrote it: audit_append on control_events.
      const runs = [randomUUID(), randomUUID()];
      for (let i = 0; i < 40; i++) {
        const call = auditAppendCall({ runId: i % 5 === 4 ? null : runs[i % 2]!, actor: SYSTEM, action: `test.step-${i}`, metadata: { i, note: 'zażółć ✓', nested: { k: [i] } } }, new Date(Date.UTC(2026, 0, 1, 0, 0, i)));
        let n = 0;
        await client.query(`select * from ${call.sql.replace(/\?/g, () => `$${++n}`)}`, call.params);
      }
      const before = (await client.query('select * from control_events order by run_id nulls first, seq')).rows;
      expect(before).toHaveLength(40);

      for (const stmt of rename.up) await client.query(stmt);
      // The later migrations too: the rows must also come through what followed the rename.
      for (const m of migrations.slice(at + 1)) for (const stmt of m.up) await client.query(stmt);
      await client.query('create table schema_migrations (id serial primary key, name varchar(255), executed_at timestamptz default now())');
      for (const m of migrations) await client.query('insert into schema_migrations (name) values ($1)', [m.name]);

      const after = (await client.query('select * from audit_events order by run_id nulls first, seq')).rows;
      expect(after).toEqual(before);
      expect((await client.query(`select to_regclass('control_events') as t`)).rows[0].t).toBeNull();
      // Still append-only under its new name.
      await expect(client.query('update audit_events set action = $1', ['x'])).rejects.toThrow(/audit_events is append-only/);
      await expect(client.query('truncate audit_events')).rejects.toThrow(/append-only/);
    } finally {
      await client.end();
    }

    orm = await openDatabase({ databaseUrl: db.url, dataDir: tmpdir(), migrate: false });
    for (const runId of await em(orm).execute<{ run_id: string }[]>('select distinct run_id from audit_events where run_id is not null').then((r) => r.map((x) => x.run_id))) {
      expect(await verifyAudit(em(orm), runId)).toMatchObject({ ok: true, rows: 16 });
      const added = await em(orm).transactional((tx) => appendAudit(tx, { runId, actor: SYSTEM, action: 'test.after-rename' }, new Date()));
      expect(added.seq).toBe(17);
      expect(await verifyAudit(em(orm), runId)).toMatchObject({ ok: true, rows: 17 });
    }
  });
});
