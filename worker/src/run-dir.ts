import { closeSync, mkdirSync, openSync, renameSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from './logger.js';

/**
 * `<WORKER_RUN_DIR>/.lease`: its mtime is touched by the live worker every second. Each
 * run's watchdog (run-watchdog.ts) stops the run when it is older than the abandon threshold.
 */
export const LEASE_FILE = '.lease';
/** `<WORKER_RUN_DIR>/.abandon-after-ms`: the threshold in ms (the hub's WORKER_LOST_AFTER + WORKER_RECLAIM_GRACE), written after each hello. */
export const ABANDON_FILE = '.abandon-after-ms';
/** What a watchdog assumes until the first hello wrote the threshold: the hub's defaults (15 s + 60 s). */
export const DEFAULT_ABANDON_AFTER_MS = 75_000;

export interface LeaseOptions {
  /** WORKER_RUN_DIR (created if missing). */
  runsDir: string;
  logger: Logger;
  /** How often the lease is touched, in ms. Default 1000. */
  intervalMs?: number;
  setInterval?: (fn: () => void, ms: number) => { unref?: () => void };
  clearInterval?: (handle: unknown) => void;
}

/**
 * The worker's heartbeat on disk: while it lives (and is not frozen) the lease stays
 * fresh, so the watchdogs of its runs leave them alone. A worker that dies, is SIGSTOPped
 * or hangs stops touching it, and its runs are stopped once the hub has given up on them.
 */
export class Lease {
  private readonly path: string;
  private readonly opts: LeaseOptions;
  private handle: unknown = null;
  private failing = false;

  constructor(opts: LeaseOptions) {
    this.opts = opts;
    this.path = join(opts.runsDir, LEASE_FILE);
  }

  /** Touches the lease now (creating it), then every `intervalMs`. */
  start(): void {
    if (this.handle) return;
    mkdirSync(this.opts.runsDir, { recursive: true, mode: 0o700 });
    this.touch();
    const every = this.opts.setInterval ?? setInterval;
    const handle = every(() => this.touch(), this.opts.intervalMs ?? 1000);
    handle.unref?.();
    this.handle = handle;
  }

  stop(): void {
    if (!this.handle) return;
    (this.opts.clearInterval ?? ((h) => clearInterval(h as NodeJS.Timeout)))(this.handle);
    this.handle = null;
  }

  touch(): void {
    try {
      const now = new Date();
      try {
        utimesSync(this.path, now, now);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        closeSync(openSync(this.path, 'a', 0o600));
      }
      if (this.failing) this.opts.logger.info('lease file writable again');
      this.failing = false;
    } catch (err) {
      // Logged once per failure streak: a lease that cannot be touched ends the runs once the hub gives up.
      if (!this.failing) this.opts.logger.error({ err, path: this.path }, 'cannot touch the lease file: the runs’ watchdogs will stop them');
      this.failing = true;
    }
  }
}

/** Records the hub's abandon threshold for the runs' watchdogs (atomically replaced). */
export function writeAbandonAfter(runsDir: string, ms: number): void {
  mkdirSync(runsDir, { recursive: true, mode: 0o700 });
  const path = join(runsDir, ABANDON_FILE);
  writeFileSync(`${path}.tmp`, `${Math.round(ms)}\n`, { mode: 0o600 });
  renameSync(`${path}.tmp`, path);
}
