import { join } from 'node:path';
import type { Clock, Frame, RunAssignment } from '@handoff/shared';
import type { ResolvedWorkerConfig } from './config.js';
import type { HubLink, ResponseOf } from './hub-link.js';
import type { Logger } from './logger.js';
import { OutboxWatcher } from './outbox-watcher.js';
import type { OutputPosition } from './output-follower.js';
import { RunControl } from './run-control.js';
import { RunInbox } from './run-inbox.js';
import { RunFiles } from './run-script.js';
import { RunReporter } from './run-reporter.js';
import { parsePassEnv, runEnvironment } from './run-env.js';
import { findRunDirs } from './stale-runs.js';
import { TmuxRun, type RunOutcome } from './tmux-run.js';

export interface RunRegistryOptions {
  config: Pick<ResolvedWorkerConfig, 'WORKER_RUN_DIR' | 'WORKER_PASS_ENV' | 'WORKER_COLS' | 'WORKER_ROWS' | 'FRAME_FLUSH_MS'>;
  /** The worker's environment: runs inherit only its allowlisted part (see run-env.ts). */
  baseEnv: Record<string, string | undefined>;
  /** Absolute path of tmux (known once the worker started). */
  tmuxBin: () => string;
  link: HubLink;
  /** The worker's root logger: each run logs through its own children. */
  logger: Logger;
  /** When a new run starts, its frames' `t`, and its reporter's retry timers. */
  clock: Clock;
  /** Cancel: ms between SIGTERM and SIGKILL of a run's processes. */
  killGraceMs: number;
  /** A run's process ended (its shares go with it). */
  onRunEnded: (runId: string) => void;
}

export interface RunEntry {
  readonly runId: string;
  readonly reporter: RunReporter;
  /** `starting` until tmux runs it, `running`, then `ended` until the hub has the exit report. */
  phase: 'starting' | 'running' | 'ended';
  /** Set once tmux runs the run and the worker supervises it (cancel, input, shares act through it). */
  tmux: TmuxRun | null;
  /** The same run from the moment it exists, before any output is read: every sealed frame is journaled through it. */
  journal: TmuxRun | null;
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
 * Journaled frames kept when re-adopting, in characters: four times what the reporter
 * holds before it stops reading (FrameBatcher's default `roomChars`), so every frame the
 * hub may lack is there.
 */
const RESUME_KEEP_CHARS = 16 * 1024 * 1024;

/**
 * The runs this worker holds, from assignment (or discovery after a restart) until the
 * hub has taken the exit report: starts each in its own tmux server, wires its control,
 * inbox, outbox and reporter, re-adopts what a predecessor left once the hub says so,
 * and cancels.
 */
export class RunRegistry {
  private readonly opts: RunRegistryOptions;
  private readonly root: Logger;
  private readonly runs = new Map<string, RunEntry>();

  constructor(opts: RunRegistryOptions) {
    this.opts = opts;
    this.root = opts.logger;
  }

  /** Every run this worker holds, the ended ones whose exit the hub has not taken yet included. */
  get ids(): string[] {
    return [...this.runs.keys()];
  }

  /** Runs whose process is starting or running here. */
  get activeIds(): string[] {
    return [...this.runs.values()].filter((r) => r.phase !== 'ended').map((r) => r.runId);
  }

  get(runId: string): RunEntry | undefined {
    return this.runs.get(runId);
  }

  has(runId: string): boolean {
    return this.runs.has(runId);
  }

  /** The run, while it is starting or running here. */
  active(runId: string): RunEntry | null {
    const entry = this.runs.get(runId);
    return entry && entry.phase !== 'ended' ? entry : null;
  }

  /** Whether tmux runs the run here now (a share can attach to it). */
  isRunning(runId: string): boolean {
    return this.runs.get(runId)?.phase === 'running';
  }

  /** The connection dropped: reports wait for the next greeting. */
  offline(): void {
    for (const entry of this.runs.values()) entry.reporter.offline();
  }

  /** After a greeting: everything unacknowledged goes again. */
  resend(): void {
    for (const entry of this.runs.values()) entry.reporter.resend();
  }

  /** Starts an assigned run in its own tmux server; resolves once it ended and its exit is queued for the hub. */
  start(assignment: RunAssignment): Promise<void> {
    const { runId } = assignment;
    const { config } = this.opts;
    const log = this.root.child({ module: 'run', runId });
    const entry = this.track(runId, 'starting');
    log.info({ command: 'argv' in assignment.command ? 'argv' : 'script', cwd: assignment.cwd }, 'run assigned');
    return this.supervise(entry, 'run could not start', () =>
      TmuxRun.start({
        runId,
        runsDir: config.WORKER_RUN_DIR,
        command: assignment.command,
        cwd: assignment.cwd,
        env: runEnvironment(this.opts.baseEnv, assignment.env, parsePassEnv(config.WORKER_PASS_ENV)),
        cols: config.WORKER_COLS,
        rows: config.WORKER_ROWS,
        tmuxBin: this.opts.tmuxBin(),
        onOutput: (text) => entry.reporter.output(text),
        outputRoom: () => entry.reporter.hasRoom(),
        onCreated: (run) => (entry.journal = run),
        // The start is reported while the command is let go: the hub's handling of the report
        // (its web share, the dashboards' update) overlaps the command's start, not follows it.
        // From here the run's tmux server is up, so a share can attach to it.
        onLaunched: (pane) => {
          entry.phase = 'running';
          entry.reporter.reportStarted(pane);
        },
        logger: this.root.child({ module: 'tmux-run', runId }),
        killGraceMs: this.opts.killGraceMs,
        startedAt: entry.startedAt,
        retainDir: true,
      }),
    );
  }

  /** Cancels a run (with the reason reported with its exit, when the hub did not ask for it). */
  cancel(entry: RunEntry, reason: string | null = null): void {
    if (entry.phase === 'ended') return;
    entry.cancelRequested = true;
    entry.cancelReason ??= reason;
    // No pause may land once the cancel began; a paused run is continued by the cancel itself.
    entry.control.close();
    if (entry.tmux) void entry.tmux.cancel();
  }

  /** The hub believes this worker has a run it does not: reports it exited, so the hub stops waiting for it. */
  reportMissing(runId: string): void {
    const entry = this.track(runId, 'ended');
    entry.markEnded();
    entry.reporter.reportExited({ exitCode: null, error: 'the run is not on this worker (worker restarted?)' });
  }

  /**
   * At start-up: every run directory a predecessor left is this worker's (the run dir is
   * per worker identity). Dead ones are removed now; live ones (and ones that ended while
   * no worker watched) are tracked and listed in the hello, and only the hub's verdict
   * decides whether they are continued or stopped — never killed before it.
   */
  async takeOver(): Promise<void> {
    const runsDir = this.opts.config.WORKER_RUN_DIR;
    const tmuxBin = this.opts.tmuxBin();
    for (const runId of await findRunDirs(runsDir)) {
      const log = this.root.child({ module: 'run', runId });
      try {
        const state = await TmuxRun.inspect(runsDir, runId, tmuxBin);
        if (state === 'dead') {
          await TmuxRun.remove(runsDir, runId, tmuxBin);
          log.warn('removed a dead run left by a previous worker');
          continue;
        }
        const [tail, startedAt] = await Promise.all([TmuxRun.journalTail(runsDir, runId, RESUME_KEEP_CHARS), TmuxRun.startedAt(runsDir, runId)]);
        const last = tail.last;
        this.track(runId, 'starting', {
          startedAt: startedAt ?? this.opts.clock.now(),
          lastSeq: last?.seq ?? 0,
          frames: tail.frames,
          from: last ? { offset: last.offset, skip: last.skip } : { offset: 0, skip: 0 },
        });
        log.info({ state, journaledSeq: last?.seq ?? 0 }, 'found a run left by a previous worker; asking the hub whether to continue it');
      } catch (err) {
        log.error({ err }, 'cannot take over a run left by a previous worker; removing it');
        await TmuxRun.remove(runsDir, runId, tmuxBin).catch((e: unknown) => log.error({ err: e }, 'cannot remove the run directory'));
      }
    }
  }

  /**
   * The hub's answer to the hello, one verdict per run listed: a run left by a predecessor
   * is continued (`keep`; frames up to `lastSeq` are recorded, the rest is resent) or
   * stopped; a run of this process the hub no longer has as this worker's is cancelled.
   */
  applyVerdicts(listed: readonly string[], verdicts: ResponseOf<'worker:hello'>['runs']): void {
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
        void this.adopt(entry, from);
      } else if (verdict && !verdict.keep && entry.phase !== 'ended') {
        this.cancel(entry, 'cancelled because the hub no longer has this run as this worker’s');
      }
    }
  }

  /**
   * Worker shutdown: runs still waiting for the hub's verdict are stopped without a report
   * (they were never continued here), every other run is cancelled; resolves with the
   * cancelled ones (each `settled` once the hub has its output and exit).
   */
  async cancelAll(reason: string): Promise<RunEntry[]> {
    await Promise.all([...this.runs.values()].filter((e) => e.adoption).map((e) => this.dropAdoption(e, 'the worker shut down')));
    const entries = [...this.runs.values()];
    for (const entry of entries) this.cancel(entry, reason);
    return entries;
  }

  /** Forgets every run (after shutdown): their reporters stop. */
  dispose(): void {
    for (const entry of this.runs.values()) entry.reporter.dispose();
    this.runs.clear();
  }

  /** Registers a run: it counts as this worker's until the hub has taken its exit report. */
  private track(runId: string, phase: RunEntry['phase'], resume: Resume | null = null): RunEntry {
    let markEnded!: () => void;
    let markSettled!: () => void;
    let setInbox!: (inbox: RunInbox | null) => void;
    const inbox = new Promise<RunInbox | null>((resolve) => (setInbox = resolve));
    const startedAt = resume?.startedAt ?? this.opts.clock.now();
    const reporter = new RunReporter({
      runId,
      link: this.opts.link,
      logger: this.root.child({ module: 'run', runId }),
      clock: this.opts.clock,
      batcher: {
        flushMs: this.opts.config.FRAME_FLUSH_MS,
        // Frames' `t` counts on the same clock as `startedAt`.
        now: () => this.opts.clock.now(),
        startedAt,
        initialSeq: resume?.lastSeq,
        initialFrames: resume?.frames,
      },
      // Sealed frames are journaled before they can be sent, from the first (which may come while the start is still under way).
      onFrameSealed: (frame, pushedThrough) => entry.journal?.recordFrame(frame, pushedThrough),
      // Past the reporter's bound the output waits in the capture file, read on as the hub acks.
      onRoom: () => entry.tmux?.resumeOutput(),
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
      journal: null,
      control: new RunControl({
        runId,
        clock: this.opts.clock,
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

  /** Continues a run a predecessor left, once the hub said it is still this worker's. */
  private adopt(entry: RunEntry, from: OutputPosition): Promise<void> {
    const { runId } = entry;
    return this.supervise(
      entry,
      'run could not be re-adopted',
      () =>
        TmuxRun.adopt({
          runId,
          runsDir: this.opts.config.WORKER_RUN_DIR,
          tmuxBin: this.opts.tmuxBin(),
          onOutput: (text) => entry.reporter.output(text),
          outputRoom: () => entry.reporter.hasRoom(),
          onCreated: (run) => (entry.journal = run),
          logger: this.root.child({ module: 'tmux-run', runId }),
          killGraceMs: this.opts.killGraceMs,
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
      // Room freed while it was opening reached no one (`onRoom` finds entry.tmux unset): read on now.
      run.resumeOutput();
      entry.phase = 'running';
      // A new run reported its start at launch (a no-op here); repeated for a re-adopted run:
      // the hub ignores a start it already has (and it may not have it).
      entry.reporter.reportStarted(await run.paneInfo());
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
    this.opts.onRunEnded(runId);
    const error = outcome.error ?? entry.cancelReason ?? undefined;
    entry.reporter.reportExited(error === undefined ? { exitCode: outcome.exitCode } : { exitCode: outcome.exitCode, error });
    entry.markEnded();
  }

  /** Stops a run left by a predecessor that this worker does not continue, and forgets it without a report (the hub is done with it). */
  private async dropAdoption(entry: RunEntry, why: string): Promise<void> {
    entry.adoption = null;
    entry.phase = 'ended';
    entry.control.close();
    entry.setInbox(null);
    const log = this.root.child({ module: 'run', runId: entry.runId });
    log.warn({ why }, 'stopping a run left by a previous worker');
    await TmuxRun.remove(this.opts.config.WORKER_RUN_DIR, entry.runId, this.opts.tmuxBin(), this.opts.killGraceMs).catch((err: unknown) =>
      log.error({ err }, 'could not stop a run left by a previous worker'),
    );
    entry.reporter.dispose();
    if (this.runs.get(entry.runId) === entry) this.runs.delete(entry.runId);
    entry.markEnded();
    entry.markSettled();
  }
}
