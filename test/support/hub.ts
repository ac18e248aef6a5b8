import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createLogger } from '../../server/src/logger.js';
import { parseConfig, serverConfigSchema, type Clock, type Role } from '@handoff/shared';
import { createHub, type Hub } from '../../server/src/hub.js';
import { createTestDatabase, type TestDatabase } from './db.js';

export interface TestHub extends Hub {
  db: TestDatabase | null;
  /** Everything the hub logged (pino JSON lines), for asserting what never reaches a log. */
  logs(): string;
  token(role: Role): Promise<string>;
  workerToken(name: string): Promise<string>;
  stop(): Promise<void>;
}

export interface TestHubOptions {
  /** 'postgres' (default: a fresh database) or 'pglite' (a fresh data dir). */
  driver?: 'postgres' | 'pglite';
  /** Reuse an existing database (e.g. a second hub node on the same data). */
  databaseUrl?: string;
  redisUrl?: string;
  env?: Record<string, string>;
  /** The hub's clock (default: the system's); a ManualClock lets a test move the hub's time. */
  clock?: Clock;
}

let userCounter = 0;

/** A real hub on port 0 with a real database (PostgreSQL by default). */
export async function startTestHub(opts: TestHubOptions = {}): Promise<TestHub> {
  const driver = opts.driver ?? 'postgres';
  const db = driver === 'postgres' && !opts.databaseUrl ? await createTestDatabase() : null;
  const dataDir = mkdtempSync(path.join(tmpdir(), 'handoff-hub-'));
  const config = parseConfig(serverConfigSchema, {
    PORT: '0',
    HANDOFF_DATA_DIR: dataDir,
    DATABASE_URL: driver === 'postgres' ? (opts.databaseUrl ?? db!.url) : undefined,
    REDIS_URL: opts.redisUrl,
    HANDOFF_WEB_DIR: path.resolve('web/dist'),
    ...opts.env,
  });
  const lines: string[] = [];
  // The hub's own logger (redaction included), writing into memory for tests to read.
  const logger = createLogger(process.env.TEST_HUB_LOG ?? 'debug', { write: (line: string) => void lines.push(line) });
  const hub = await createHub(config, { logger, ...(opts.clock ? { clock: opts.clock } : {}) }).catch(async (err: unknown) => {
    // A hub that fails to start (e.g. a bad policy file) must not leak its database.
    await db?.drop();
    rmSync(dataDir, { recursive: true, force: true });
    throw err;
  });
  return Object.assign(hub, {
    db,
    logs: () => lines.join(''),
    async token(role: Role) {
      return (await hub.auth.addUser(`${role}-${++userCounter}-${process.pid}`, role)).token;
    },
    async workerToken(name: string) {
      return (await hub.auth.issueWorkerToken(name)).token;
    },
    async stop() {
      await hub.close();
      await db?.drop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  });
}
