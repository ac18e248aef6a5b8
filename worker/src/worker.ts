import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { io, type Socket } from 'socket.io-client';
import { z } from 'zod';
import {
  AppError,
  NAMESPACE,
  controlApplySchema,
  runAssignmentSchema,
  runMessageSchema,
  termInputSchema,
  validationError,
  workerClientEvents,
  type Ack,
  type AckCallback,
  type ControlApply,
  type Frame,
  type HubToWorker,
  type RunAssignment,
  type RunMessage,
  type TermInput,
  type WorkerToHub,
} from '@handoff/shared';
import pkg from '../package.json' with { type: 'json' };
import type { ResolvedWorkerConfig } from './config.js';
import type { HubLink, PayloadOf, ReportEvent, ResponseOf } from './hub-link.js';
import type { Logger } from './logger.js';
import { OutboxWatcher } from './outbox-watcher.js';
import type { OutputPosition } from './output-follower.js';
import { RunControl } from './run-control.js';
import { messageFlash, RunInbox } from './run-inbox.js';
import { RunFiles } from './run-script.js';
import { RunReporter } from './run-reporter.js';
import { ShareManager } from './share-manager.js';
import { findProviderBinary } from './share-provider.js';
import { ABANDON_FILE, DEFAULT_ABANDON_AFTER_MS, LeaseKeeper, lockRunDir, writeAbandonAfter, type RunDirLock } from './run-dir.js';
import { parsePassEnv, runEnvironment } from './run-env.js';
import { findRunDirs } from './stale-runs.js';
import { findExecutable } from './tmux.js';
import { TmuxRun, type RunOutcome } from './tmux-run.js';

export interface WorkerOptions {
  config: ResolvedWorkerConfig;
  /** The worker's environment: runs inherit only its allowlisted part (see run-env.ts), before their own env. */
  baseEnv: Record<string, string | undefined>;
  logger: Logger;
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
  /** Share stop: ms between SIGTERM and SIGKILL of a share's processes. Default 1000. */
  shareKillGraceMs?: number;
}

type HubSocket = Socket<HubToWorker, WorkerToHub>;

interface RunEntry {
  readonly runId: string;
  readonly reporter: RunReporter;
  /** `starting` until tmux runs it, `running`, then `ended` until the hub has the exit report. */
  phase: 'starting' | 'running' | 'ended';
  tmux: TmuxRun | null;
  /** Takes control changes from the moment the run is known; acts on them once tmux runs it. */
  readonly control: RunControl;
  /** The run's inbox once tmux runs it; null if it never started. */
  readonly inbox: Promise<RunInbox | null>;
  readonly setInbox: (inbox: RunInbox | null) => void;
  /** Follows the agent's requests (`$HANDOFF_OUTBOX`) while the run runs. */
  outbox: OutboxWatcher | null;
  cancelRequested: boolean;
  /** Why it was cancelled, when the hub did not ask for it (reported with the exit). */
  cancelReason: string | null;
  /** Resolves when the process ended (or never started). */
  readonly ended: Promise<void>;
  readonly markEnded: () => void;
  /** Resolves when the hub took the exit report. */
  readonly settled: Promise<void>;
  readonly markSettled: () => void;
  /** When the run started (epoch ms): frames' `t` count from it, across worker restarts. */
  readonly startedAt: number;
  /** A run a previous worker process left, waiting for the hub's verdict (null once decided, or for a new run). */
  adoption: { from: OutputPosition } | null;
}

/** What a restarted worker resumes a run from: its frame journal (see frame-journal.ts). */
interface Resume {
  startedAt: number;
  /** Seq of the last frame journaled. */
  lastSeq: number;
  /** The newest journaled frames (what the hub may lack). */
  frames: Frame[];
  /** Where the output file stood after the last journaled frame. */
  from: OutputPosition;
}

/**
 * Journaled frames kept when re-adopting, in characters: twice what the reporter may hold
 * unacknowledged (FrameBatcher's default cap), so every frame the hub may lack is there.
 */
const RESUME_KEEP_CHARS = 16 * 1024 * 1024;

/** The hub only hands out uuid run ids; they also name the run directories. */
const assignmentSchema = runAssignmentSchema.extend({ runId: z.uuid() });
const cancelSchema = z.object({ runId: z.string() });

/**
 * The worker's one connection to the hub: greets it, runs what it assigns (each run in
 * its own tmux server), streams output, reports starts and exits — surviving
 * disconnects: everything unacknowledged is resent after each reconnect.
 */
export class Worker {
  private readonly config: ResolvedWorkerConfig;
  private readonly baseEnv: Record<string, string | undefined>;
  private readonly log: Logger;
  private readonly root: Logger;
  private readonly version: string;
  private readonly ackTimeoutMs: number;
  private readonly killGraceMs: number;
  private readonly stopTimeoutMs: number;
  private readonly maxReconnectDelayMs: number | null;
  private readonly runs = new Map<string, RunEntry>();
  private readonly link: HubLink;
  private readonly shares: ShareManager;

  private tmuxBin = 'tmux';
  private socket: HubSocket | null = null;
  private greeted = false;
  /** Bumped per connection: an answer to an earlier connection's hello is ignored. */
  private connection = 0;
  private heartbeat: ReturnType<typeof setInterval> | null = null;
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  private reconnectAttempts = 0;
  /** Index into `config.hubUrls` of the node tried last: a failed or lost node makes the worker try the next one. */
  private urlIndex = -1;
  private heartbeatIntervalMs = 5000;
  private stopping: Promise<void> | null = null;
  private id: string | null = null;
  private lock: RunDirLock | null = null;
  private readonly lease: LeaseKeeper;

  constructor(opts: WorkerOptions) {
    this.config = opts.config;
    this.baseEnv = opts.baseEnv;
    this.root = opts.logger;
    this.log = opts.logger.child({ module: 'worker' });
    this.version = opts.version ?? pkg.version;
    this.ackTimeoutMs = opts.ackTimeoutMs ?? 15_000;
    this.killGraceMs = opts.killGraceMs ?? 2000;
    this.stopTimeoutMs = opts.stopTimeoutMs ?? 5000;
    this.maxReconnectDelayMs = opts.maxReconnectDelayMs ?? null;
    this.lease = new LeaseKeeper(this.config.WORKER_RUN_DIR, { logger: this.log });
    const isGreeted = () => this.greeted;
    this.link = {
      get ready() {
        return isGreeted();
      },
      send: (event, payload, onAck) => this.send(event, payload, onAck),
    };
    this.shares = new ShareManager({
      runsDir: this.config.WORKER_RUN_DIR,
      tmuxBin: () => this.tmuxBin,
      binaries: { tmate: this.config.TMATE_BIN, upterm: this.config.UPTERM_BIN },
      env: runEnvironment(this.baseEnv, {}, parsePassEnv(this.config.WORKER_PASS_ENV)),
      link: this.link,
      logger: this.root,
      isRunActive: (runId) => this.runs.get(runId)?.phase === 'running',
      killGraceMs: opts.shareKillGraceMs,
    });
  }

  /** True while connected and greeted by the hub. */
  get connected(): boolean {
    return this.greeted;
  }

  /** The id the hub gave this worker (null before the first hello). */
  get workerId(): string | null {
    return this.id;
  }

  /** Session ids of the share processes alive here (starting or ready). */
  get activeShareIds(): string[] {
    return this.shares.aliveSessionIds;
  }

  /** Runs whose process is starting or running here. */
  get activeRunIds(): string[] {
    return [...this.runs.values()].filter((r) => r.phase !== 'ended').map((r) => r.runId);
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
    await this.takeOverRuns();
    await this.shares.cleanStale();
    this.log.info(
      {
        tmate: findProviderBinary('tmate', this.config.TMATE_BIN, this.baseEnv.PATH),
        upterm: findProviderBinary('upterm', this.config.UPTERM_BIN, this.baseEnv.PATH),
      },
      'share providers (null: shares of that provider fail with a clear message)',
    );
    this.log.info({ hubs: this.config.hubUrls, capacity: this.config.WORKER_CAPACITY, runDir: this.config.WORKER_RUN_DIR }, 'connecting to hub');
    this.connectNext();
  }

  /**
   * Connects to the next hub node in `HANDOFF_URL` (round robin). The worker reconnects
   * itself rather than through socket.io's own retry loop, which would stay on one node:
   * when a node dies, the next attempt goes to another one at once.
   */
  private connectNext(): void {
    if (this.stopping) return;
    this.urlIndex = (this.urlIndex + 1) % this.config.hubUrls.length;
    const url = `${this.config.hubUrls[this.urlIndex]}${NAMESPACE.worker}`;
    const socket: HubSocket = io(url, {
      transports: ['websocket'],
      auth: { token: this.config.HANDOFF_WORKER_TOKEN },
      forceNew: true,
      reconnection: false,
      timeout: 5000,
    });
    this.socket = socket;
    const lost = () => {
      if (this.socket !== socket) return;
      socket.removeAllListeners();
      socket.close();
      this.socket = null;
      this.scheduleReconnect();
    };
    socket.on('connect', () => this.greet());
    socket.on('disconnect', (reason) => {
      this.goOffline();
      if (this.stopping) this.log.info({ reason, url }, 'disconnected from hub');
      else this.log.warn({ reason, url }, 'disconnected from hub');
      lost();
    });
    socket.on('connect_error', (err) => {
      this.log.warn({ error: err.message, url }, 'cannot reach hub; trying the next node');
      lost();
    });
    socket.on('run:assign', (payload, ack) => this.onAssign(payload, ack));
    socket.on('run:cancel', (payload) => this.onCancel(payload));
    socket.on('control:apply', (payload, ack) => this.onControlApply(payload, ack));
    socket.on('run:message', (payload, ack) => this.onMessage(payload, ack));
    socket.on('term:input', (payload, ack) => this.onTermInput(payload, ack));
    socket.on('share:start', (payload, ack) => this.shares.onStart(payload, ack));
    socket.on('share:stop', (payload) => this.shares.onStop(payload));
  }

  /** Cancels every active run, waits (bounded) until the hub has their exits, disconnects. */
  stop(): Promise<void> {
    this.stopping ??= this.shutdown();
    return this.stopping;
  }

  private async shutdown(): Promise<void> {
    this.log.info({ activeRuns: this.activeRunIds.length }, 'worker stopping');
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    // Shares first: they are clients of the runs' tmux servers, and the hub ends their sessions anyway.
    await this.shares.stopAll();
    // Runs still waiting for the hub's verdict were never continued here: stop them without a report.
    await Promise.all([...this.runs.values()].filter((e) => e.adoption).map((e) => this.dropAdoption(e, 'the worker shut down')));
    const entries = [...this.runs.values()];
    for (const entry of entries) this.cancelRun(entry, 'cancelled because the worker shut down');
    await Promise.all(entries.map((e) => e.ended));
    const settled = Promise.all(entries.map((e) => e.settled)).then(() => true);
    const timeout = new Promise<false>((resolve) => setTimeout(() => resolve(false), this.stopTimeoutMs).unref());
    if (entries.length > 0 && !(await Promise.race([settled, timeout]))) {
      this.log.warn('stopped before the hub acknowledged every exit report; the hub will mark those runs lost');
    }
    this.goOffline();
    const socket = this.socket;
    this.socket = null;
    socket?.removeAllListeners();
    socket?.disconnect();
    for (const entry of this.runs.values()) entry.reporter.dispose();
    this.runs.clear();
    this.lease.stop();
    this.lock?.release();
    this.log.info('worker stopped');
  }

  private greet(): void {
    const socket = this.socket!;
    const connection = ++this.connection;
    // Runs whose exit the hub has not taken yet are still this worker's: listing them
    // keeps the hub from declaring them lost before the exit report arrives.
    const payload = { capacity: this.config.WORKER_CAPACITY, runs: [...this.runs.keys()], version: this.version };
    this.send('worker:hello', payload, (ack) => {
      if (connection !== this.connection || !socket.connected) return;
      if (!ack?.ok) {
        this.log.error({ error: ack ? ack.error : 'no answer' }, 'hub did not accept worker:hello; reconnecting');
        socket.disconnect(); // the disconnect handler reconnects (to the next node)
        return;
      }
      const { workerId, name, heartbeatIntervalMs, abandonAfterMs } = ack.data;
      this.id = workerId;
      this.greeted = true;
      this.reconnectAttempts = 0;
      this.heartbeatIntervalMs = heartbeatIntervalMs;
      this.log.info({ workerId, name, runs: payload.runs.length }, 'worker connected');
      try {
        writeAbandonAfter(this.config.WORKER_RUN_DIR, abandonAfterMs);
      } catch (err) {
        this.log.error({ err }, 'cannot record the abandon threshold for the runs’ watchdogs');
      }
      this.applyVerdicts(payload.runs, ack.data.runs);
      this.startHeartbeat(heartbeatIntervalMs);
      for (const entry of this.runs.values()) entry.reporter.resend();
      this.shares.resend();
    }, true);
  }

  private startHeartbeat(intervalMs: number): void {
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = setInterval(() => {
      if (!this.greeted) return;
      this.send('worker:heartbeat', { activeRuns: this.activeRunIds.length, shares: this.shares.aliveSessionIds }, (ack) => {
        if (ack && !ack.ok) this.log.warn({ error: ack.error }, 'hub refused heartbeat');
        else if (!ack && this.greeted) this.log.warn('heartbeat not acknowledged');
      });
    }, Math.max(100, intervalMs));
  }

  private goOffline(): void {
    this.greeted = false;
    for (const entry of this.runs.values()) entry.reporter.offline();
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = null;
  }

  /**
   * The next attempt, on the next node: the first one at once (a node that died usually
   * has a live peer), then exponential backoff with full jitter, capped near the heartbeat
   * interval so a worker is back long before the hub gives up on it.
   */
  private scheduleReconnect(): void {
    if (this.stopping || this.reconnectTimer) return;
    const cap = this.maxReconnectDelayMs ?? this.heartbeatIntervalMs;
    const attempt = this.reconnectAttempts;
    this.reconnectAttempts += 1;
    // A full round of the node list costs little: only after it does the backoff grow.
    const round = Math.floor(attempt / this.config.hubUrls.length);
    const base = round === 0 ? 100 : Math.min(cap, 250 * 2 ** (round - 1));
    const delay = Math.round(base * (0.5 + Math.random() / 2));
    this.log.info({ delayMs: delay, attempt }, 'reconnecting to hub');
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      this.connectNext();
    }, delay);
  }

  private onAssign(raw: RunAssignment, ack: AckCallback<Record<string, never>>): void {
    const parsed = assignmentSchema.safeParse(raw);
    if (!parsed.success) {
      ack({ ok: false, error: validationError(parsed.error, 'run assignment').toBody() });
      return;
    }
    const assignment = parsed.data;
    if (this.runs.has(assignment.runId)) {
      ack({ ok: true, data: {} }); // the hub re-pushed a run this worker already has
      return;
    }
    if (this.stopping) {
      ack({ ok: false, error: { code: 'UNAVAILABLE', message: 'worker is shutting down' } });
      return;
    }
    const active = this.activeRunIds.length;
    if (active >= this.config.WORKER_CAPACITY) {
      ack({ ok: false, error: { code: 'LIMIT_REACHED', message: `worker is at capacity (${active}/${this.config.WORKER_CAPACITY} runs)` } });
      return;
    }
    ack({ ok: true, data: {} });
    void this.runAssigned(assignment);
  }

  /** Registers a run: it counts as this worker's until the hub has taken its exit report. */
  private track(runId: string, phase: RunEntry['phase'], resume: Resume | null = null): RunEntry {
    let markEnded!: () => void;
    let markSettled!: () => void;
    let setInbox!: (inbox: RunInbox | null) => void;
    const inbox = new Promise<RunInbox | null>((resolve) => (setInbox = resolve));
    const startedAt = resume?.startedAt ?? Date.now();
    const reporter = new RunReporter({
      runId,
      link: this.link,
      logger: this.root.child({ module: 'run', runId }),
      batcher: { flushMs: this.config.FRAME_FLUSH_MS, startedAt, initialSeq: resume?.lastSeq, initialFrames: resume?.frames },
      // Sealed frames are journaled before they can be sent (output only flows once tmux runs the command).
      onFrameSealed: (frame, pushedThrough) => entry.tmux?.recordFrame(frame, pushedThrough),
      onSettled: () => {
        // The hub has the exit: the run directory (kept for a restart until now) can go.
        void entry.tmux?.release();
        reporter.dispose();
        this.runs.delete(runId);
        markSettled();
      },
    });
    const entry: RunEntry = {
      runId,
      reporter,
      phase,
      tmux: null,
      control: new RunControl({
        runId,
        logger: this.root.child({ module: 'control', runId }),
        onApplied: (report) => reporter.reportControlApplied(report),
        scrollbackSeq: () => reporter.outputSeq(),
        deliverHandoff: async (seq, packet) => {
          const ready = await inbox;
          if (!ready) throw new Error('the run has no inbox (it never started)');
          return ready.deliverHandoff(seq, packet);
        },
      }),
      inbox,
      setInbox: (inbox) => setInbox(inbox),
      outbox: null,
      cancelRequested: false,
      cancelReason: null,
      ended: new Promise((resolve) => (markEnded = resolve)),
      markEnded: () => markEnded(),
      settled: new Promise((resolve) => (markSettled = resolve)),
      markSettled: () => markSettled(),
      startedAt,
      adoption: resume ? { from: resume.from } : null,
    };
    this.runs.set(runId, entry);
    return entry;
  }

  private runAssigned(assignment: RunAssignment): Promise<void> {
    const { runId } = assignment;
    const log = this.root.child({ module: 'run', runId });
    const entry = this.track(runId, 'starting');
    log.info({ command: 'argv' in assignment.command ? 'argv' : 'script', cwd: assignment.cwd }, 'run assigned');
    return this.supervise(entry, 'run could not start', () =>
      TmuxRun.start({
        runId,
        runsDir: this.config.WORKER_RUN_DIR,
        command: assignment.command,
        cwd: assignment.cwd,
        env: runEnvironment(this.baseEnv, assignment.env, parsePassEnv(this.config.WORKER_PASS_ENV)),
        cols: this.config.WORKER_COLS,
        rows: this.config.WORKER_ROWS,
        tmuxBin: this.tmuxBin,
        onOutput: (text) => entry.reporter.output(text),
        logger: this.root.child({ module: 'tmux-run', runId }),
        killGraceMs: this.killGraceMs,
        startedAt: entry.startedAt,
        retainDir: true,
      }),
    );
  }

  /** Continues a run a predecessor left, once the hub said it is still this worker's. */
  private adoptRun(entry: RunEntry, from: OutputPosition): Promise<void> {
    const { runId } = entry;
    return this.supervise(entry, 'run could not be re-adopted', () =>
      TmuxRun.adopt({
        runId,
        runsDir: this.config.WORKER_RUN_DIR,
        tmuxBin: this.tmuxBin,
        onOutput: (text) => entry.reporter.output(text),
        logger: this.root.child({ module: 'tmux-run', runId }),
        killGraceMs: this.killGraceMs,
        from,
        retainDir: true,
      }),
      true,
    );
  }

  /** Runs (or continues) the run in tmux, wires its control, inbox and outbox, and reports its start and exit. */
  private async supervise(entry: RunEntry, failure: string, open: () => Promise<TmuxRun>, adopted = false): Promise<void> {
    const { runId } = entry;
    const log = this.root.child({ module: 'run', runId });
    let outcome: RunOutcome | { exitCode: null; error: string };
    try {
      const run = await open();
      entry.tmux = run;
      entry.phase = 'running';
      // Repeated for a re-adopted run: the hub ignores a start it already has (and it may not have it).
      entry.reporter.reportStarted();
      entry.control.attach(run, adopted && (await run.stopped()));
      entry.setInbox(new RunInbox({ dir: run.dir, logger: this.root.child({ module: 'inbox', runId }) }));
      entry.outbox = new OutboxWatcher({
        path: run.outboxPath,
        statePath: join(run.dir, RunFiles.outboxOffset),
        logger: this.root.child({ module: 'outbox', runId }),
        onRequestOperator: (reason) => entry.reporter.reportNeedsOperator(reason),
      });
      entry.outbox.start();
      if (entry.cancelRequested) void run.cancel();
      outcome = await run.result;
    } catch (err) {
      log.error({ err }, failure);
      outcome = { exitCode: null, error: `${failure}: ${err instanceof Error ? err.message : String(err)}` };
    }
    entry.phase = 'ended';
    entry.control.close();
    entry.outbox?.close();
    entry.setInbox(null); // no-op once set: a promise settles once
    void this.shares.stopRun(runId);
    const error = outcome.error ?? entry.cancelReason ?? undefined;
    entry.reporter.reportExited(error === undefined ? { exitCode: outcome.exitCode } : { exitCode: outcome.exitCode, error });
    entry.markEnded();
  }

  /**
   * At start-up: every run directory a predecessor left is this worker's (the run dir is
   * per worker identity). Dead ones are removed now; live ones (and ones that ended while
   * no worker watched) are tracked and listed in the hello, and only the hub's verdict
   * decides whether they are continued or stopped — never killed before it.
   */
  private async takeOverRuns(): Promise<void> {
    const runsDir = this.config.WORKER_RUN_DIR;
    for (const runId of await findRunDirs(runsDir)) {
      const log = this.root.child({ module: 'run', runId });
      try {
        const state = await TmuxRun.inspect(runsDir, runId, this.tmuxBin);
        if (state === 'dead') {
          await TmuxRun.remove(runsDir, runId, this.tmuxBin);
          log.warn('removed a dead run left by a previous worker');
          continue;
        }
        const [tail, startedAt] = await Promise.all([TmuxRun.journalTail(runsDir, runId, RESUME_KEEP_CHARS), TmuxRun.startedAt(runsDir, runId)]);
        const last = tail.last;
        this.track(runId, 'starting', {
          startedAt: startedAt ?? Date.now(),
          lastSeq: last?.seq ?? 0,
          frames: tail.frames,
          from: last ? { offset: last.offset, skip: last.skip } : { offset: 0, skip: 0 },
        });
        log.info({ state, journaledSeq: last?.seq ?? 0 }, 'found a run left by a previous worker; asking the hub whether to continue it');
      } catch (err) {
        log.error({ err }, 'cannot take over a run left by a previous worker; removing it');
        await TmuxRun.remove(runsDir, runId, this.tmuxBin).catch((e: unknown) => log.error({ err: e }, 'cannot remove the run directory'));
      }
    }
  }

  /**
   * The hub's answer to the hello, one verdict per run listed: a run left by a predecessor
   * is continued (`keep`; frames up to `lastSeq` are recorded, the rest is resent) or
   * stopped; a run of this process the hub no longer has as this worker's is cancelled.
   */
  private applyVerdicts(listed: readonly string[], verdicts: ReadonlyArray<{ runId: string; keep: boolean; lastSeq: number }>): void {
    const byRun = new Map(verdicts.map((v) => [v.runId, v]));
    for (const runId of listed) {
      const entry = this.runs.get(runId);
      if (!entry) continue;
      const verdict = byRun.get(runId);
      if (entry.adoption) {
        const { from } = entry.adoption;
        entry.adoption = null;
        if (!verdict?.keep) {
          void this.dropAdoption(entry, verdict ? 'the hub no longer has it as this worker’s' : 'the hub gave no verdict for it');
          continue;
        }
        if (verdict.lastSeq > entry.reporter.lastSeq) {
          this.root.child({ module: 'run', runId }).error({ hubSeq: verdict.lastSeq, journaledSeq: entry.reporter.lastSeq }, 'the hub has more frames than this run’s journal');
        }
        entry.reporter.acknowledged(verdict.lastSeq);
        this.root.child({ module: 'run', runId }).info({ lastSeq: verdict.lastSeq, journaledSeq: entry.reporter.lastSeq }, 're-adopting a run left by a previous worker');
        void this.adoptRun(entry, from);
      } else if (verdict && !verdict.keep && entry.phase !== 'ended') {
        this.cancelRun(entry, 'cancelled because the hub no longer has this run as this worker’s');
      }
    }
  }

  /** Stops a run left by a predecessor that this worker does not continue, and forgets it without a report (the hub is done with it). */
  private async dropAdoption(entry: RunEntry, why: string): Promise<void> {
    entry.adoption = null;
    entry.phase = 'ended';
    entry.control.close();
    entry.setInbox(null);
    const log = this.root.child({ module: 'run', runId: entry.runId });
    log.warn({ why }, 'stopping a run left by a previous worker');
    await TmuxRun.remove(this.config.WORKER_RUN_DIR, entry.runId, this.tmuxBin, this.killGraceMs).catch((err: unknown) =>
      log.error({ err }, 'could not stop a run left by a previous worker'),
    );
    entry.reporter.dispose();
    if (this.runs.get(entry.runId) === entry) this.runs.delete(entry.runId);
    entry.markEnded();
    entry.markSettled();
  }

  private onCancel(raw: { runId: string }): void {
    const parsed = cancelSchema.safeParse(raw);
    if (!parsed.success) {
      this.log.warn('ignoring malformed run:cancel');
      return;
    }
    const entry = this.runs.get(parsed.data.runId);
    if (entry?.adoption) {
      // Left by a predecessor and not continued yet: the verdict (keep:false) follows and stops it.
      entry.cancelRequested = true;
      return;
    }
    if (entry) {
      this.cancelRun(entry);
      return;
    }
    // The hub believes this worker has the run (e.g. from before a restart): tell it otherwise.
    if (z.uuid().safeParse(parsed.data.runId).success && !this.stopping) {
      this.log.warn({ runId: parsed.data.runId }, 'cancel for a run this worker does not have');
      this.reportMissing(parsed.data.runId);
    }
  }

  private cancelRun(entry: RunEntry, reason: string | null = null): void {
    if (entry.phase === 'ended') return;
    entry.cancelRequested = true;
    entry.cancelReason ??= reason;
    // No pause may land once the cancel began; a paused run is continued by the cancel itself.
    entry.control.close();
    if (entry.tmux) void entry.tmux.cancel();
  }

  /** `control:apply`: accepted (or a seq already seen) → ok at once; `control:applied` follows once it took hold. */
  private onControlApply(raw: ControlApply, ack: AckCallback<Record<string, never>>): void {
    const parsed = controlApplySchema.safeParse(raw);
    if (!parsed.success) {
      ack({ ok: false, error: validationError(parsed.error, 'control change').toBody() });
      return;
    }
    const entry = this.activeRun(parsed.data.runId);
    if (!entry) {
      ack({ ok: false, error: notRunningHere(parsed.data.runId) });
      return;
    }
    const result = entry.control.apply(parsed.data);
    if (result === 'closed') {
      ack({ ok: false, error: { code: 'STATE_CONFLICT', message: `run ${parsed.data.runId} is being cancelled on this worker` } });
      return;
    }
    ack({ ok: true, data: {} });
  }

  /** `run:message`: ok once the message is in the run's inbox (at most once per message id). */
  private onMessage(raw: RunMessage, ack: AckCallback<Record<string, never>>): void {
    const parsed = runMessageSchema.safeParse(raw);
    if (!parsed.success) {
      ack({ ok: false, error: validationError(parsed.error, 'run message').toBody() });
      return;
    }
    const entry = this.activeRun(parsed.data.runId);
    if (!entry) {
      ack({ ok: false, error: notRunningHere(parsed.data.runId) });
      return;
    }
    void this.deliverMessage(entry, parsed.data, ack);
  }

  private async deliverMessage(entry: RunEntry, msg: RunMessage, ack: AckCallback<Record<string, never>>): Promise<void> {
    const inbox = await entry.inbox; // a message may arrive while tmux is still starting the run
    if (!inbox || entry.phase === 'ended') {
      ack({ ok: false, error: notRunningHere(msg.runId) });
      return;
    }
    try {
      if (await inbox.deliver(msg)) void entry.tmux?.status.flash(messageFlash(msg.actor, msg.message));
      ack({ ok: true, data: {} });
    } catch (err) {
      if (hasEnded(entry)) {
        ack({ ok: false, error: notRunningHere(msg.runId) }); // the run directory went with the run
        return;
      }
      this.log.error({ err, runId: msg.runId }, 'could not append a message to the run inbox');
      ack({ ok: false, error: { code: 'INTERNAL', message: 'could not write the message to the run inbox' } });
    }
  }

  /** `term:input`: ok once tmux took the keys (the operator's shell during a takeover, else the agent's pane), in arrival order per run. */
  private onTermInput(raw: TermInput, ack: AckCallback<Record<string, never>>): void {
    const parsed = termInputSchema.safeParse(raw);
    if (!parsed.success) {
      ack({ ok: false, error: validationError(parsed.error, 'terminal input').toBody() });
      return;
    }
    const { runId, data } = parsed.data;
    const run = this.activeRun(runId)?.tmux;
    if (!run) {
      ack({ ok: false, error: notRunningHere(runId) });
      return;
    }
    run.input(data).then(
      () => ack({ ok: true, data: {} }),
      (err: unknown) => {
        if (err instanceof AppError) {
          ack({ ok: false, error: { code: err.code, message: err.message } });
          return;
        }
        this.log.error({ err, runId }, 'could not send keys to the run’s terminal');
        ack({ ok: false, error: { code: 'INTERNAL', message: 'could not send the keys to the run’s terminal' } });
      },
    );
  }

  /** The run, while it is starting or running here. */
  private activeRun(runId: string): RunEntry | null {
    const entry = this.runs.get(runId);
    return entry && entry.phase !== 'ended' ? entry : null;
  }

  private reportMissing(runId: string): void {
    const entry = this.track(runId, 'ended');
    entry.markEnded();
    entry.reporter.reportExited({ exitCode: null, error: 'the run is not on this worker (worker restarted?)' });
  }

  /**
   * Emits with an ack timeout and hands the handler a validated ack (`undefined` when
   * none came). A malformed ack counts as a transient INTERNAL error.
   */
  private send<E extends ReportEvent>(
    event: E,
    payload: PayloadOf<E>,
    onAck: (ack: Ack<ResponseOf<E>> | undefined) => void,
    beforeHello = false,
  ): void {
    const socket = this.socket;
    if (!socket || !(beforeHello ? socket.connected : this.greeted)) {
      onAck(undefined);
      return;
    }
    const untyped = socket.timeout(this.ackTimeoutMs) as unknown as {
      emit(event: string, payload: unknown, cb: (err: Error | null, res: unknown) => void): void;
    };
    untyped.emit(event, payload, (err, res) => onAck(err ? undefined : readAck(event, res)));
  }
}

/** Read through a call: the phase changes across awaits, which TypeScript's narrowing does not see. */
function hasEnded(entry: RunEntry): boolean {
  return entry.phase === 'ended';
}

function notRunningHere(runId: string): { code: 'NOT_FOUND'; message: string } {
  return { code: 'NOT_FOUND', message: `run ${runId} is not running on this worker` };
}

const ackSchema = z.union([
  z.object({ ok: z.literal(true), data: z.unknown() }),
  z.object({ ok: z.literal(false), error: z.object({ code: z.string(), message: z.string() }).loose() }),
]);

function readAck<E extends ReportEvent>(event: E, res: unknown): Ack<ResponseOf<E>> {
  const malformed = { ok: false as const, error: { code: 'INTERNAL' as const, message: `malformed ${event} ack from hub` } };
  const envelope = ackSchema.safeParse(res);
  if (!envelope.success) return malformed;
  if (!envelope.data.ok) return envelope.data as Ack<ResponseOf<E>>;
  const data = workerClientEvents[event].response.safeParse(envelope.data.data);
  return data.success ? { ok: true, data: data.data as ResponseOf<E> } : malformed;
}

