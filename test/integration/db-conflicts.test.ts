import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import pg from 'pg';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode } from '@handoff/shared';
import { isDatabaseUnavailable, isTransientConflict, toAppError } from '../../server/src/errors.js';
import { errorBoundary } from '../../server/src/http/errors.js';
import { em, openDatabase, type Orm } from '../../server/src/infra/db/orm.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';

// Express is the server package's dependency: resolved from there, as the hub resolves it.
const express = createRequire(new URL('../../server/package.json', import.meta.url))('express') as typeof import('express');

// A transaction PostgreSQL rolls back because of a concurrent one (a deadlock, a lock wait it
// gives up on) wrote nothing, and the same request succeeds when made again: it is answered
// 503 UNAVAILABLE with Retry-After — retryable, like an outage — never 500 INTERNAL.
describe('a transaction lost to a concurrent one is retryable, not an internal error', () => {
  let db: TestDatabase;
  let orm: Orm;

  beforeAll(async () => {
    db = await createTestDatabase();
    orm = await openDatabase({ databaseUrl: db.url, dataDir: '.' });
    await em(orm).execute(`create table conflict_probe (id int primary key, v int not null)`);
    await em(orm).execute(`insert into conflict_probe values (1, 0), (2, 0)`);
  });
  afterAll(async () => {
    await orm?.close();
    await db?.drop();
  });

  /** Two transactions lock rows 1 and 2 in opposite orders: PostgreSQL kills one (40P01). */
  async function realDeadlock(): Promise<unknown> {
    let release!: () => void;
    const bothHoldOne = new Promise<void>((resolve) => (release = resolve));
    let holding = 0;
    const hold = () => {
      holding += 1;
      if (holding === 2) release();
      return bothHoldOne;
    };
    const cross = (first: number, second: number) =>
      em(orm).transactional(async (tx) => {
        await tx.execute(`update conflict_probe set v = v + 1 where id = ?`, [first]);
        await hold();
        await tx.execute(`update conflict_probe set v = v + 1 where id = ?`, [second]);
      });
    const results = await Promise.allSettled([cross(1, 2), cross(2, 1)]);
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    // The race happened: exactly one of the two lost, the other committed.
    expect(failed).toHaveLength(1);
    return failed[0]!.reason;
  }

  it('a real deadlock, as MikroORM throws it, maps to UNAVAILABLE with a retry hint; the winner’s change is the only one written', async () => {
    const before = await em(orm).execute<{ id: number; v: number }[]>(`select id, v from conflict_probe order by id`);
    const err = await realDeadlock();
    expect(isTransientConflict(err)).toBe(true);
    expect(isDatabaseUnavailable(err)).toBe(false);
    const app = toAppError(err);
    expect(app.code).toBe(ErrorCode.UNAVAILABLE);
    expect(app.message).toMatch(/concurrent change .* nothing was written; retry/);
    expect(app.details).toEqual({ retryAfterMs: 1000 });
    // The loser rolled back: each row moved by exactly the winner's one increment.
    const after = await em(orm).execute<{ id: number; v: number }[]>(`select id, v from conflict_probe order by id`);
    expect(after.map((r) => r.v)).toEqual(before.map((r) => r.v + 1));

    // Through the REST error boundary: 503, Retry-After, the message — not a 500.
    const web = express();
    web.get('/boom', () => {
      throw err;
    });
    web.use(errorBoundary(pino({ level: 'silent' })));
    const server = web.listen(0);
    try {
      const res = await fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}/boom`);
      expect(res.status).toBe(503);
      expect(res.headers.get('retry-after')).toBe('1');
      const body = (await res.json()) as { error: { code: string; message: string } };
      expect(body.error.code).toBe('UNAVAILABLE');
      expect(body.error.message).toMatch(/retry/);
    } finally {
      server.close();
    }
  });

  it('a lock wait the database gives up on (lock_timeout, 55P03) is retryable too; a data error is not', async () => {
    const holder = new pg.Client({ connectionString: db.url });
    await holder.connect();
    try {
      await holder.query('begin');
      await holder.query('select * from conflict_probe where id = 1 for update');
      const err = await em(orm)
        .transactional(async (tx) => {
          await tx.execute(`set local lock_timeout = '100ms'`);
          await tx.execute(`update conflict_probe set v = v + 1 where id = 1`);
        })
        .then(() => null, (e: unknown) => e);
      expect(err).not.toBeNull();
      expect(isTransientConflict(err)).toBe(true);
      expect(toAppError(err).code).toBe(ErrorCode.UNAVAILABLE);
    } finally {
      await holder.query('rollback');
      await holder.end();
    }
    const dup = await em(orm).execute(`insert into conflict_probe values (1, 0)`).then(() => null, (e: unknown) => e);
    expect(isTransientConflict(dup)).toBe(false);
    expect(toAppError(dup).code).toBe(ErrorCode.INTERNAL);
  });
});
