import { loadConfig } from './config.js';
import { openDatabase } from './infra/db/orm.js';
import { createLogger } from './logger.js';

/**
 * One-shot migration entry point (`node dist/server/src/migrate.js`, or `pnpm migrate`):
 * opens the database with MIGRATION_DATABASE_URL (the owner role) or DATABASE_URL, runs
 * the pending migrations and exits 0. Compose runs it (through `cli.js db grant-hub-role`,
 * which also grants the hubs' role) once before the hub nodes start, so nodes starting
 * together never race to migrate. A hub only checks the ledger then; it migrates by itself
 * only when MIGRATION_DATABASE_URL is not set (a single node needs nothing else).
 */
let config;
try {
  config = loadConfig();
} catch (err) {
  process.stderr.write(`${(err as Error).message}\n`);
  process.exit(2);
}
const log = createLogger(config.LOG_LEVEL).child({ module: 'migrate' });
const databaseUrl = config.MIGRATION_DATABASE_URL ?? config.DATABASE_URL;
try {
  const orm = await openDatabase({ databaseUrl, dataDir: config.HANDOFF_DATA_DIR });
  const done = await orm.migrator.getExecuted();
  log.info({ database: databaseUrl ? 'postgresql' : 'pglite', applied: done.length, latest: done.at(-1)?.name ?? null }, 'database migrated');
  await orm.close();
  process.exit(0);
} catch (err) {
  process.stderr.write(`handoff migrate failed: ${(err as Error).message}\n`);
  process.exit(1);
}
