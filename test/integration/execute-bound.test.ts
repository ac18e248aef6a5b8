import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { em, executeBound, openDatabase, type Orm } from '../../server/src/infra/db/orm.js';
import { createTestDatabase } from '../support/db.js';

/** Values that an inlining (escaping) path or a naive placeholder rewrite would get wrong. */
const HOSTILE = ["it's", 'back\\slash \\\' quote', '$1 ? $2 :name', "'); drop table runs; --", 'E\'\\x00\'', 'ünï 🙂 \u200f', 'x'.repeat(1024 * 1024)];

async function roundTrips(orm: Orm): Promise<void> {
  const rows = await executeBound<{ v: string; n: number }>(em(orm), 'select v, n from unnest($1::text[], $2::int[]) as u(v, n)', [HOSTILE, HOSTILE.map((_, i) => i)]);
  expect(rows.map((r) => r.v)).toEqual(HOSTILE);
  // Inside a transaction it runs on the transaction's connection: its uncommitted write is visible, then rolled back.
  await em(orm).transactional(async (tx) => {
    await tx.execute('create temporary table bound_check (v text) on commit drop');
    await executeBound(tx, 'insert into bound_check (v) select * from json_array_elements_text($1::json)', [JSON.stringify(HOSTILE)]);
    const [row] = await executeBound<{ all_of: string[] }>(tx, 'select array_agg(v order by v) as all_of from bound_check', []);
    expect(row!.all_of).toEqual([...HOSTILE].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)));
  });
}

describe('executeBound: values as bind parameters, never inlined', () => {
  it('round-trips hostile strings exactly on PGlite, alone and inside a transaction', async () => {
    const dataDir = mkdtempSync(path.join(tmpdir(), 'handoff-bound-'));
    const orm = await openDatabase({ dataDir });
    try {
      await roundTrips(orm);
    } finally {
      await orm.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it('round-trips hostile strings exactly on PostgreSQL, alone and inside a transaction', async () => {
    const db = await createTestDatabase();
    const orm = await openDatabase({ databaseUrl: db.url, dataDir: tmpdir() });
    try {
      await roundTrips(orm);
    } finally {
      await orm.close();
      await db.drop();
    }
  });
});
