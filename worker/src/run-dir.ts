import { createHash } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readFileSync, renameSync, unlinkSync, utimesSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { systemClock, type Clock, type TimerHandle } from '@handoff/shared';
import type { Logger } from './logger.js';

/** In the worker's run dir: touched every second by the live worker; each run's dead-man switch watches its mtime. */
export const LEASE_FILE = '.lease';
/** In the worker's run dir: how long (ms, decimal text) the lease may go stale before a run's dead-man switch stops it. */
export const ABANDON_FILE = '.abandon-after-ms';
/** In the worker's run dir: `{pid, startTime}` of the worker that owns it. */
export const LOCK_FILE = '.lock';
/** Until the hub says otherwise (WORKER_LOST_AFTER + WORKER_RECLAIM_GRACE defaults: 9 s + 60 s). */
export const DEFAULT_ABANDON_AFTER_MS = 69_000;

/**
 * The default run dir of a worker: per OS user and per worker identity (a digest of its
 * token), so two workers on one host never share one, and a restarted worker finds the
 * runs its predecessor left — its own, never a neighbour's.
 */
export function defaultRunDir(token: string, uid: number | string = process.getuid?.() ?? 'user', tmp: string = tmpdir()): string {
  const identity = createHash('sha256').update(token).digest('hex').slice(0, 16);
  return join(tmp, `handoff-worker-${uid}`, identity);
}

/** Kernel start time of a process (clock ticks since boot), or null if it does not exist: with the pid it names one process for good. */
function processStartTime(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: count fields after the last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}

/** A held run-dir lock; `release()` removes it (only if it is still ours). */
export interface RunDirLock {
  readonly path: string;
  release(): void;
}

/**
 * Takes the run dir for this process: creates it (0700) and an exclusive lock file naming
 * this process. A lock whose process is gone (or whose pid was reused) is stale and taken
 * over; a live one means another worker owns the dir: throws a readable error.
 */
export function lockRunDir(runDir: string, pid: number = process.pid): RunDirLock {
  mkdirSync(runDir, { recursive: true, mode: 0o700 });
  const path = join(runDir, LOCK_FILE);
  const mine = JSON.stringify({ pid, startTime: processStartTime(pid) });
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fd = openSync(path, 'wx', 0o600);
      writeSync(fd, mine);
      closeSync(fd);
      return {
        path,
        release() {
          try {
            if (readFileSync(path, 'utf8') === mine) unlinkSync(path);
          } catch {
            // already gone
          }
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    let holder: { pid?: unknown; startTime?: unknown } = {};
    try {
      holder = JSON.parse(readFileSync(path, 'utf8')) as typeof holder;
    } catch {
      // unreadable or half-written: a crashed predecessor's, treated as stale
    }
    const holderPid = typeof holder.pid === 'number' ? holder.pid : 0;
    if (holderPid > 0 && holderPid !== pid && processStartTime(holderPid) !== null && processStartTime(holderPid) === holder.startTime) {
      throw new Error(`another worker (pid ${holderPid}) is using the run directory ${runDir}; give this one another token or WORKER_RUN_DIR`);
    }
    try {
      unlinkSync(path); // stale: its worker is gone
    } catch {
      // another starter removed it first; the next attempt decides
    }
  }
  throw new Error(`could not lock the run directory ${runDir}`);
}

/** Writes the abandon threshold atomically (a dead-man switch may read it at any moment). */
export function writeAbandonAfter(runDir: string, ms: number): void {
  mkdirSync(runDir, { recursive: true, mode: 0o700 });
  const path = join(runDir, ABANDON_FILE);
  writeFileSync(`${path}.tmp`, String(Math.round(ms)), { mode: 0o600 });
  renameSync(`${path}.tmp`, path);
}

/**
 * Keeps the lease fresh while the worker lives: the mtime of `<runDir>/.lease` is set to
 * now every `intervalMs`. A dead or frozen worker stops touching it, and each run's
 * dead-man switch (run-watchdog.ts) stops its run once the lease is older than the
 * abandon threshold.
 */
export class LeaseKeeper {
  private timer: TimerHandle | null = null;
  private failing = false;
  private readonly clock: Clock;
  readonly path: string;

  constructor(
    private readonly runDir: string,
    /** `intervalMs`: between touches, default 1000; `clock`: whose time the mtime is and who owns the timer, default `systemClock`. */
    private readonly opts: { intervalMs?: number; clock?: Clock; logger?: Pick<Logger, 'info' | 'error'> } = {},
  ) {
    this.path = join(runDir, LEASE_FILE);
    this.clock = opts.clock ?? systemClock;
  }

  start(): void {
    mkdirSync(this.runDir, { recursive: true, mode: 0o700 });
    this.touch();
    this.timer ??= this.clock.setInterval(() => this.touch(), this.opts.intervalMs ?? 1000).unref();
  }

  stop(): void {
    this.timer?.cancel();
    this.timer = null;
  }

  /** Never throws: a lease that cannot be touched is logged once per failure streak (the runs' watchdogs will end them). */
  touch(): void {
    const at = this.clock.date();
    try {
      try {
        utimesSync(this.path, at, at);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        writeFileSync(this.path, '', { mode: 0o600 });
        utimesSync(this.path, at, at);
      }
      if (this.failing) this.opts.logger?.info('lease file writable again');
      this.failing = false;
    } catch (err) {
      if (!this.failing) this.opts.logger?.error({ err, path: this.path }, 'cannot touch the lease file: the runs’ watchdogs will stop them');
      this.failing = true;
    }
  }
}
