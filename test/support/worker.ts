import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { defaultRunDir } from '../../worker/src/run-dir.js';

const WORKER_MAIN = path.resolve('worker/src/main.ts');

export interface WorkerProcess {
  proc: ChildProcess;
  runDir: string;
  /** Everything the worker logged (stdout + stderr). */
  output(): string;
  /** SIGTERM (graceful) or SIGKILL (crash); resolves when the process is gone. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Kills it (if alive) and removes its run dir. */
  stop(): Promise<void>;
}

/**
 * Starts a real worker process (`node --import tsx worker/src/main.ts`) against a hub.
 * `runDir: null` leaves WORKER_RUN_DIR unset (the worker's default, per identity).
 */
export function startWorker(opts: { hubUrl: string; token: string; capacity?: number; runDir?: string | null; env?: Record<string, string> }): WorkerProcess {
  const runDir = opts.runDir === null ? defaultRunDir(opts.token) : (opts.runDir ?? mkdtempSync(path.join(tmpdir(), 'handoff-wrk-')));
  let log = '';
  // Node itself with tsx's loader, not the tsx wrapper: a signal (SIGKILL above all) must
  // reach the worker process, not a parent that would leave it running.
  const proc = spawn(process.execPath, ['--import', 'tsx', WORKER_MAIN], {
    env: {
      ...process.env,
      HANDOFF_URL: opts.hubUrl,
      HANDOFF_WORKER_TOKEN: opts.token,
      WORKER_CAPACITY: String(opts.capacity ?? 2),
      ...(opts.runDir === null ? {} : { WORKER_RUN_DIR: runDir }),
      LOG_LEVEL: process.env.TEST_WORKER_LOG ?? 'info',
      ...opts.env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  proc.stdout!.on('data', (d: Buffer) => (log += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const kill = async (signal: NodeJS.Signals = 'SIGTERM') => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
    await exited;
  };
  return {
    proc,
    runDir,
    output: () => log,
    kill,
    async stop() {
      await kill('SIGTERM');
      rmSync(runDir, { recursive: true, force: true });
    },
  };
}
