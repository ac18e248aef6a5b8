import { randomBytes } from 'node:crypto';
import pg from 'pg';

/** Admin connection used to create a throwaway database per test file. */
export const PG_ADMIN_URL = process.env.TEST_PG_ADMIN_URL ?? 'postgresql://postgres@127.0.0.1:5432/postgres';
export const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

export interface TestDatabase {
  url: string;
  name: string;
  drop(): Promise<void>;
}

async function admin<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: PG_ADMIN_URL });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** A fresh, empty PostgreSQL database on the local server; `drop()` removes it. */
export async function createTestDatabase(): Promise<TestDatabase> {
  const name = `handoff_t_${randomBytes(6).toString('hex')}`;
  await admin((c) => c.query(`create database ${name}`));
  const url = new URL(PG_ADMIN_URL);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    name,
    drop: () => admin((c) => c.query(`drop database if exists ${name} with (force)`)).then(() => undefined),
  };
}

/** A fault injected into a test's own database (see `failNthInsert`). */
export interface InsertFault {
  /** Inserts into the table seen so far (the failed one included). */
  seen(): Promise<number>;
  /** Removes the trigger, its function and its counter. */
  remove(): Promise<void>;
}

/**
 * Makes the `nth` insert into `table` from now on fail, once (a trigger raising an error; its
 * counter is a sequence, which the failed insert's rollback does not undo). Only for a
 * database the test created: the fault is in the schema, for every connection.
 */
export async function failNthInsert(client: pg.Client, table: string, nth: number): Promise<InsertFault> {
  const name = `fail_insert_${randomBytes(4).toString('hex')}`;
  await client.query(`create sequence ${name}`);
  await client.query(`create function ${name}() returns trigger language plpgsql security definer as $$
    begin if nextval('${name}') = ${nth} then raise exception 'injected: ${table} insert failed'; end if; return new; end $$`);
  await client.query(`create trigger ${name} before insert on ${table} for each row execute function ${name}()`);
  return {
    seen: async () => Number((await client.query(`select case when is_called then last_value else 0 end as n from ${name}`)).rows[0].n),
    remove: async () => {
      await client.query(`drop trigger ${name} on ${table}`);
      await client.query(`drop function ${name}()`);
      await client.query(`drop sequence ${name}`);
    },
  };
}
