import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { systemClock, type Clock } from '@handoff/shared';
import pkg from '../package.json' with { type: 'json' };
import type { ResolvedWorkerConfig } from './config.js';
import { HubConnection } from './hub-connection.js';
import { listen } from './inbound-handlers.js';
import type { Logger } from './logger.js';
import { ABANDON_FILE, DEFAULT_ABANDON_AFTER_MS, LeaseKeeper, lockRunDir, writeAbandonAfter, type RunDirLock } from './run-dir.js';
import { parsePassEnv, runEnvironment } from './run-env.js';
import { RunRegistry } from './run-registry.js';
import { ShareManager } from './share-manager.js';
import { findProviderBinary } from './share-provider.js';
import { findExecutable } from './tmux.js';

export interface WorkerOptions {
  config: ResolvedWorkerConfig;
  /** The worker's environment: runs inherit only its allowlisted part (see run-env.ts), before their own env. */
  baseEnv: Record<string, string | undefined>;
  logger: Logger;
  /** Time for the worker's own timers (heartbeat, reconnect backoff, lease, report retries, stop deadline) and its runs' frame times. Default `systemClock`. */
  clock?: Clock;
  /** Reported in `worker:hello`. Default: the worker package's version. */
  version?: string;
  /** How long to wait for any ack from the hub, in ms. Default 15 000. */
  ackTimeoutMs?: number;
  /** Cancel: ms between SIGTERM and SIGKILL of a run's processes. Default 2000. */
  killGraceMs?: number;
  /** stop(): how long to wait for the hub to take the final exit reports, in ms. Default 5000. */
  stopTimeoutMs?: number;
  /**
   * Largest delay between reconnect attempts, in ms. Default: the hub's heartbeat interval
   * (5 000 until the first hello), so a worker is back well within WORKER_LOST_AFTER.
   */
  maxReconnectDelayMs?: number;
  /** Jitter of the reconnect delay, a number in [0, 1). Default `Math.random`. */
  random?: () => number;
  /** Share stop: ms between SIGTERM and SIGKILL of a share's processes. Default 1000. */
  shareKillGraceMs?: number;
}

/**
 * A worker: greets the hub, runs what it assigns (each run in its own tmux server),
 * streams output, reports starts and exits — surviving disconnects: everything
 * unacknowledged is resent after each reconnect. This is the composition of its parts:
 * the hub connection (hub-connection.ts), the runs it holds (run-registry.ts), the
 * inbound handlers (inbound-handlers.ts, parsed by on.ts), the shares (share-manager.ts)
 * and the run dir's lock and lease (run-dir.ts).
 */
export class Worker {
  private readonly config: ResolvedWorkerConfig;
  private readonly baseEnv: Record<string, string | undefined>;
  private readonly log: Logger;
  private readonly version: string;
  private readonly clock: Clock;
  private readonly stopTimeoutMs: number;
  private readonly killGraceMs: number;
  private readonly connection: HubConnection;
  private readonly runs: RunRegistry;
  private readonly shares: ShareManager;
  private readonly lease: LeaseKeeper;

  private tmuxBin = 'tmux';
  private stopping: Promise<void> | null = null;
  private lock: RunDirLock | null = null;

  constructor(opts: WorkerOptions) {
    const { config } = opts;
    const root = opts.logger;
    this.config = config;
    this.baseEnv = opts.baseEnv;
    this.log = root.child({ module: 'worker' });
    this.version = opts.version ?? pkg.version;
    this.clock = opts.clock ?? systemClock;
    this.stopTimeoutMs = opts.stopTimeoutMs ?? 5000;
    this.killGraceMs = opts.killGraceMs ?? 2000;
    this.lease = new LeaseKeeper(config.WORKER_RUN_DIR, { clock: this.clock, logger: this.log });
    // The parts call each other only through these closures, which run after construction.
    this.connection = new HubConnection({
      hubUrls: config.hubUrls,
      token: config.HANDOFF_WORKER_TOKEN,
      logger: this.log,
      clock: this.clock,
      ackTimeoutMs: opts.ackTimeoutMs ?? 15_000,
      maxReconnectDelayMs: opts.maxReconnectDelayMs ?? null,
      random: opts.random,
      // Runs whose exit the hub has not taken yet are still this worker's: listing them
      // keeps the hub from declaring them lost before the exit report arrives.
      hello: () => ({ capacity: config.WORKER_CAPACITY, runs: this.runs.ids, version: this.version }),
      onGreeted: (welcome, hello) => this.greeted(welcome.abandonAfterMs, hello.runs, welcome.runs),
      onOffline: () => this.runs.offline(),
      heartbeat: () => ({ activeRuns: this.runs.activeIds.length, shares: this.shares.aliveSessionIds }),
      listen: (socket) =>
        listen(socket, { runs: this.runs, shares: this.shares, capacity: config.WORKER_CAPACITY, stopping: () => this.stopping !== null, logger: this.log }),
    });
    this.runs = new RunRegistry({
      config,
      baseEnv: this.baseEnv,
      tmuxBin: () => this.tmuxBin,
      link: this.connection,
      logger: root,
      clock: this.clock,
      killGraceMs: this.killGraceMs,
      onRunEnded: (runId) => void this.shares.stopRun(runId),
    });
    this.shares = new ShareManager({
      runsDir: config.WORKER_RUN_DIR,
      tmuxBin: () => this.tmuxBin,
      binaries: { tmate: config.TMATE_BIN, upterm: config.UPTERM_BIN },
      env: runEnvironment(this.baseEnv, {}, parsePassEnv(config.WORKER_PASS_ENV)),
      link: this.connection,
      logger: root,
      isRunActive: (runId) => this.runs.isRunning(runId),
      clock: this.clock,
      killGraceMs: opts.shareKillGraceMs,
    });
  }

  /** True while connected and greeted by the hub. */
  get connected(): boolean {
    return this.connection.ready;
  }

  /** The id the hub gave this worker (null before the first hello). */
  get workerId(): string | null {
    return this.connection.workerId;
  }

  /** Session ids of the share processes alive here (starting or ready). */
  get activeShareIds(): string[] {
    return this.shares.aliveSessionIds;
  }

  /** Runs whose process is starting or running here. */
  get activeRunIds(): string[] {
    return this.runs.activeIds;
  }

  /**
   * Takes its run dir (locked), takes over what a predecessor left (runs to re-adopt once
   * the hub has said which are still this worker's; dead ones are removed), then connects
   * (and keeps reconnecting) to a hub node.
   */
  async start(): Promise<void> {
    if (this.lock) return;
    const tmuxBin = findExecutable('tmux', this.baseEnv.PATH);
    if (!tmuxBin) throw new Error('tmux not found on PATH: the worker runs every task in tmux');
    this.tmuxBin = tmuxBin;
    // Exclusive: a second worker on the same dir would take the first one's runs for its own.
    this.lock = lockRunDir(this.config.WORKER_RUN_DIR);
    // First: the watchdogs of runs a predecessor left judge this worker by it.
    this.lease.start();
    if (!existsSync(join(this.config.WORKER_RUN_DIR, ABANDON_FILE))) writeAbandonAfter(this.config.WORKER_RUN_DIR, DEFAULT_ABANDON_AFTER_MS);
    await this.runs.takeOver();
    await this.shares.cleanStale();
    this.log.info(
      {
        tmate: findProviderBinary('tmate', this.config.TMATE_BIN, this.baseEnv.PATH),
        upterm: findProviderBinary('upterm', this.config.UPTERM_BIN, this.baseEnv.PATH),
      },
      'share providers (null: shares of that provider fail with a clear message)',
    );
    this.log.info({ hubs: this.config.hubUrls, capacity: this.config.WORKER_CAPACITY, runDir: this.config.WORKER_RUN_DIR }, 'connecting to hub');
    this.connection.connect();
  }

  /** Cancels every active run, waits (bounded) until the hub has their exits, disconnects. */
  stop(): Promise<void> {
    this.stopping ??= this.shutdown();
    return this.stopping;
  }

  private async shutdown(): Promise<void> {
    this.log.info({ activeRuns: this.activeRunIds.length }, 'worker stopping');
    this.connection.stopReconnecting();
    // Shares first: they are clients of the runs' tmux servers, and the hub ends their sessions anyway.
    await this.shares.stopAll();
    const entries = await this.runs.cancelAll('cancelled because the worker shut down');
    const settled = Promise.all(entries.map((e) => e.settled)).then(() => true);
    let expire!: () => void;
    const timeout = new Promise<false>((resolve) => (expire = () => resolve(false)));
    // The runs' processes get their kill grace; the hub then has stopTimeoutMs to take their output and exits.
    const deadline = this.clock.setTimeout(() => expire(), this.killGraceMs + this.stopTimeoutMs).unref();
    if (entries.length > 0 && !(await Promise.race([settled, timeout]))) {
      this.log.warn('stopped before the hub acknowledged every exit report; the hub will mark those runs lost');
    }
    deadline.cancel();
    this.connection.close();
    this.runs.dispose();
    this.lease.stop();
    this.lock?.release();
    this.log.info('worker stopped');
  }

  /** The hub accepted the hello: record its abandon threshold for the runs' watchdogs, then act on its verdicts and resend what it lacks. */
  private greeted(abandonAfterMs: number, listed: readonly string[], verdicts: Parameters<RunRegistry['applyVerdicts']>[1]): void {
    try {
      writeAbandonAfter(this.config.WORKER_RUN_DIR, abandonAfterMs);
    } catch (err) {
      this.log.error({ err }, 'cannot record the abandon threshold for the runs’ watchdogs');
    }
    this.runs.applyVerdicts(listed, verdicts);
    this.runs.resend();
    this.shares.resend();
  }
}
