import path from 'node:path';
import { mkdirSync } from 'node:fs';
import { MikroORM, type Options } from '@mikro-orm/core';
import { Migration, Migrator } from '@mikro-orm/migrations';
import { PostgreSqlDriver } from '@mikro-orm/postgresql';
import { PgliteDriver } from '@mikro-orm/pglite';
import type { SqlEntityManager } from '@mikro-orm/sql';
import { migrations } from '../../../migrations/index.js';
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
   * MIGRATION_DATABASE_URL is set): it only checks that every migration is applied.
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
    mkdirSync(dir, { recursive: true });
    orm = await MikroORM.init({ ...common, driver: PgliteDriver, dbName: dir } as Options);
  }
  if (opts.migrate === false) await assertMigrated(orm);
  else await orm.migrator.up();
  return orm;
}

/** Refuses a schema that is behind the code (read-only: needs SELECT on schema_migrations only). */
async function assertMigrated(orm: Orm): Promise<void> {
  let applied: Set<string>;
  try {
    const rows = await em(orm).execute<{ name: string }[]>('select name from schema_migrations');
    applied = new Set(rows.map((r) => r.name));
  } catch (err) {
    await orm.close();
    throw new Error(`cannot read schema_migrations (${(err as Error).message}): run 'pnpm migrate' with MIGRATION_DATABASE_URL first`, { cause: err });
  }
  const pending = migrations.filter((m) => !applied.has(m.name)).map((m) => m.name);
  if (pending.length) {
    await orm.close();
    throw new Error(`the database is missing migrations ${pending.join(', ')}: run 'pnpm migrate' (MIGRATION_DATABASE_URL, the owner role) before starting the hub`);
  }
}

/** A fresh entity manager for one unit of work (no global identity map). */
export function em(orm: Orm): Em {
  return orm.em.fork() as Em;
}
