import path from 'node:path';
import { mkdirSync } from 'node:fs';
import { MikroORM, type EntityName, type Options } from '@mikro-orm/core';
import { Migration, Migrator } from '@mikro-orm/migrations';
import { PostgreSqlDriver } from '@mikro-orm/postgresql';
import { PgliteDriver } from '@mikro-orm/pglite';
import type { SqlEntityManager } from '@mikro-orm/sql';
import { CompiledQuery, type Kysely } from 'kysely';
import { migrations } from '../../../../migrations/index.js';
import { allEntities } from './entities.js';

export type Orm = MikroORM;
export type Em = SqlEntityManager;

export interface DbOptions {
  /** PostgreSQL URL; absent → embedded PGlite under `dataDir`. */
  databaseUrl?: string | undefined;
  dataDir: string;
  debug?: boolean;
  /** PostgreSQL only: longest wait for a connection before a call fails (DATABASE_CONNECT_TIMEOUT), ms. Default 2000. */
  connectTimeoutMs?: number;
  /**
   * Run pending migrations (default true). False for a least-privilege role (the hub when
   * MIGRATION_DATABASE_URL is set): pending migrations are an error, never attempted.
   */
  migrate?: boolean;
}

/** One MikroORM migration class per SQL module in migrations/, so both drivers run the same statements. */
function migrationClasses() {
  return migrations.map((m) => ({
    name: m.name,
    class: class extends Migration {
      override up(): void {
        for (const sql of m.up) this.addSql(sql);
      }
    },
  }));
}

/** Opens the database (PostgreSQL or PGlite) and runs pending migrations. */
export async function openDatabase(opts: DbOptions): Promise<Orm> {
  const common: Partial<Options> = {
    entities: allEntities,
    extensions: [Migrator],
    migrations: { migrationsList: migrationClasses(), snapshot: false, snapshotOnMigrate: false, silent: true, tableName: 'schema_migrations' },
    debug: opts.debug ?? false,
    allowGlobalContext: false,
    ensureDatabase: false,
  };
  let orm: MikroORM;
  if (opts.databaseUrl) {
    orm = await MikroORM.init({
      ...common,
      driver: PostgreSqlDriver,
      clientUrl: opts.databaseUrl,
      pool: { min: 0, max: 10 },
      // Bounds both connecting and waiting for a pooled client, so a dead database fails a
      // call within this time (→ 503) instead of queueing it forever; keepAlive notices a
      // silently dropped peer.
      driverOptions: { connectionTimeoutMillis: opts.connectTimeoutMs ?? 2000, keepAlive: true },
    } as Options);
  } else {
    const dir = path.resolve(opts.dataDir, 'pglite');
    // The data dir also holds the generated secret key: nobody else on the host may read it.
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    orm = await MikroORM.init({ ...common, driver: PgliteDriver, dbName: dir } as Options);
  }
  // Checked first, read-only: a node on an up-to-date schema runs no DDL at all (a
  // least-privilege role could not even create the ledger table "if not exists").
  const pending = await pendingMigrations(orm).catch(async (err: unknown) => {
    await orm.close();
    throw new Error(`cannot read schema_migrations (${(err as Error).message})`, { cause: err });
  });
  if (pending.length && opts.migrate === false) {
    await orm.close();
    throw new Error(`the database is missing migrations ${pending.join(', ')}: run 'pnpm migrate' (MIGRATION_DATABASE_URL, the owner role) before starting the hub`);
  }
  if (pending.length) await orm.migrator.up();
  return orm;
}

/** Names of the migrations not yet applied (all of them on an empty database). */
async function pendingMigrations(orm: Orm): Promise<string[]> {
  const [ledger] = await em(orm).execute<{ t: string | null }[]>(`select to_regclass('schema_migrations')::text as t`);
  if (!ledger?.t) return migrations.map((m) => m.name);
  const applied = new Set((await em(orm).execute<{ name: string }[]>('select name from schema_migrations')).map((r) => r.name));
  return migrations.filter((m) => !applied.has(m.name)).map((m) => m.name);
}

/** A fresh entity manager for one unit of work (no global identity map). */
export function em(orm: Orm): Em {
  return orm.em.fork() as Em;
}

/**
 * A result row of `schema`'s table (or its `row_to_json`) as the entity's plain data: columns
 * named as properties, timestamps as dates — a copy nothing manages. `Em#map` would also build
 * a managed entity and merge it into the identity map, about seven times the work, which a
 * control change paid twice on its hot path for a row it only reads.
 */
export function rowOf<T extends object>(tx: Em, schema: EntityName<T>, raw: Record<string, unknown>): T {
  return tx.getComparator().mapResult(tx.getMetadata(schema), raw as never) as T;
}

/**
 * Runs `sql` with its values sent as bind parameters (`$1`, `$2`, … in `sql`), inside `tx`'s
 * transaction when it has one. `Em#execute` inlines every value into the SQL text, escaping it
 * character by character in JavaScript: fine for the small values of most statements, but a
 * megabyte of terminal output became a megabyte of string concatenation (and garbage) per
 * recording insert. Statements that carry bulk data use this instead.
 */
export async function executeBound<T>(tx: Em, sql: string, params: readonly unknown[]): Promise<T[]> {
  const executor = (tx.getTransactionContext() as Kysely<unknown> | undefined) ?? (tx.getConnection().getClient() as Kysely<unknown>);
  const result = await executor.executeQuery<T>(CompiledQuery.raw(sql, [...params]));
  return result.rows as T[];
}
