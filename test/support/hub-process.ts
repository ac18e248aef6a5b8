import { systemClock } from '@handoff/shared';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Role } from '@handoff/shared';
import { openDatabase, type Orm } from '../../server/src/infra/db/orm.js';
import { AuthService } from '../../server/src/auth/auth-service.js';
import { freePort } from './ports.js';

const HUB_MAIN = path.resolve('server/src/main.ts');
/** Every hub process of one test run shares a key, as the nodes of one deployment must. */
const SHARED_SECRET_KEY = randomBytes(32).toString('hex');

export interface HubProcess {
  /** `http://127.0.0.1:<port>`; stays the same across `restart()`. */
  url: string;
  port: number;
  /** The current process (replaced by `restart()`). */
  readonly proc: ChildProcess;
  /** Everything every incarnation printed (pino JSON lines + stderr). */
  output(): string;
  /** Whether the current process is still running. */
  alive(): boolean;
  /** Sends `signal` (SIGTERM by default) and resolves with how the process ended. */
  kill(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves with how the current process ended (without signalling it). */
  exited(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Starts the node again on the same port and data dir (kills the old one first if alive). */
  restart(): Promise<void>;
  /** Kills it (SIGKILL if SIGTERM does not do within 10 s) and removes its data dir. */
  stop(): Promise<void>;
}

export interface HubProcessOptions {
  databaseUrl: string;
  redisUrl?: string;
  /** Fixed port; default a free one chosen up front so restarts keep the URL. */
  port?: number;
  env?: Record<string, string>;
  /** How long to wait for 'hub listening'. Default 30 s. */
  startTimeoutMs?: number;
}

/**
 * A real hub node (`node --import tsx server/src/main.ts`), as production runs it: the
 * test can SIGKILL/SIGTERM it, restart it on the same port, and read its logs.
 */
export async function startHubProcess(opts: HubProcessOptions): Promise<HubProcess> {
  const port = opts.port ?? (await freePort());
  const dataDir = mkdtempSync(path.join(tmpdir(), 'handoff-hubp-'));
  let log = '';
  let proc!: ChildProcess;
  let exit!: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  const spawnOnce = async () => {
    // Node with tsx's loader, not the tsx wrapper: signals must reach the hub itself.
    const p = spawn(process.execPath, ['--import', 'tsx', HUB_MAIN], {
      env: {
        ...process.env,
        PORT: String(port),
        HOST: '127.0.0.1',
        DATABASE_URL: opts.databaseUrl,
        REDIS_URL: opts.redisUrl ?? '',
        HANDOFF_DATA_DIR: dataDir,
        HANDOFF_SECRET_KEY: SHARED_SECRET_KEY,
        LOG_LEVEL: process.env.TEST_HUB_LOG ?? 'info',
        ...opts.env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    proc = p;
    exit = new Promise((resolve) => p.once('exit', (code, signal) => resolve({ code, signal })));
    let own = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`hub on ${port} did not start within ${opts.startTimeoutMs ?? 30_000} ms:\n${own}`)), opts.startTimeoutMs ?? 30_000);
      const onData = (d: Buffer) => {
        const text = d.toString();
        log += text;
        own += text;
        if (own.includes('"msg":"hub listening"')) {
          clearTimeout(timer);
          resolve();
        }
      };
      p.stdout!.on('data', onData);
      p.stderr!.on('data', onData);
      p.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`hub on ${port} exited (${code ?? signal}) before listening:\n${own}`));
      });
    });
  };

  const kill = async (signal: NodeJS.Signals = 'SIGTERM') => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
    return exit;
  };
  await spawnOnce();
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    get proc() {
      return proc;
    },
    output: () => log,
    alive: () => proc.exitCode === null && proc.signalCode === null,
    kill,
    exited: () => exit,
    async restart() {
      await kill('SIGKILL');
      await spawnOnce();
    },
    async stop() {
      const hard = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      await kill('SIGTERM');
      clearTimeout(hard);
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export interface TokenIssuer {
  token(role: Role): Promise<string>;
  workerToken(name: string): Promise<string>;
  close(): Promise<void>;
}

let userCounter = 0;

/**
 * Issues tokens straight into a hub database (the same AuthService the CLI uses). Opening
 * it runs the migrations, so open it before starting hub processes on a fresh database.
 */
export async function tokenIssuer(databaseUrl: string): Promise<TokenIssuer> {
  const orm: Orm = await openDatabase({ databaseUrl, dataDir: tmpdir() });
  const auth = new AuthService(orm, systemClock);
  return {
    token: async (role) => (await auth.addUser(`${role}-p${process.pid}-${++userCounter}`, role)).token,
    workerToken: async (name) => (await auth.issueWorkerToken(name)).token,
    close: () => orm.close(),
  };
}
