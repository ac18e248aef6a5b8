import { renameSync, watch, writeFileSync, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { systemClock, type Clock, type ControlApply, type ControlState, type HandoffContext, type PauseMode, type TimerHandle } from '@handoff/shared';
import { handoffContext, handoffPacket, type CapturedContext, type Handback, type HandoffPacket } from './handoff-packet.js';
import type { PayloadOf } from './hub-link.js';
import type { Logger } from './logger.js';
import type { Operator } from './operator-shell.js';
import type { ProcReader } from './process-tree.js';
import { RunFreezer } from './run-freezer.js';
import { RunFiles } from './run-script.js';

/** How a control state took hold on the worker (`control:applied`). */
export type EffectiveControl = PayloadOf<'control:applied'>['effective'];

/** What the agent reads from `$HANDOFF_CONTROL` (see agent-sdk/index.d.ts). */
export interface ControlFile {
  seq: number;
  state: ControlState;
  /** How a pause or a takeover halts the agent; null when `state` is `agent`. */
  mode: PauseMode | null;
  /** Who paused or took over the run (absent for `agent`, or when the hub named nobody): what `handoff-agent mcp` reports as "controlled by". */
  by?: { id: string; name: string };
}

/** The run a `RunControl` acts on (a `TmuxRun` once it started). */
export interface ControlTarget {
  /** The pane's process id: the root of the run's processes. */
  readonly pid: number;
  /** The process group of the run's command, or null when it has none of its own (see `RunFreezer`). */
  commandGroup(): number | null;
  /** The run directory: control and checkpoint files live there. */
  readonly dir: string;
  /** True once the run is being cancelled or ended: it must not be paused again. */
  readonly ending: boolean;
  readonly status: { setBanner(text: string | null): Promise<void> };
  /** Takeover: opens (or keeps) the operator's shell, whose banner says whether the agent is already halted. */
  openOperatorShell(operator: Operator, agent: 'paused' | 'pausing'): Promise<void>;
  /** Hand-back: the operator shell's cwd and env (the agent pane's and the run's when no shell is open). */
  captureContext(): Promise<CapturedContext>;
  /** Ends a takeover's shell and everything started in it (nothing when none is open). */
  closeOperatorShell(): Promise<void>;
}

export interface RunControlOptions {
  runId: string;
  logger: Logger;
  /**
   * A control change took hold: report it to the hub (reliably). May return a promise that
   * resolves once the hub took the report: the full /proc scan that follows a pause or a
   * resume waits for it (see `afterReport`).
   */
  onApplied: (report: PayloadOf<'control:applied'>) => Promise<void> | void;
  /** The worker's clock: `appliedAt`, the soft-pause grace and the freezer's waits. Default the system's. */
  clock?: Clock;
  /** How long a hard pause may take to see every process stopped, in ms. Default 1000. */
  suspendTimeoutMs?: number;
  /** How processes are read from /proc (tests count full scans through it). Default: /proc. */
  procs?: ProcReader;
  /** The run's newest terminal frame seq: a hand-back's scrollback reference into the recording. */
  scrollbackSeq: () => number;
  /** Appends a hand-back packet to `$HANDOFF_INBOX`, at most once per control seq. */
  deliverHandoff: (seq: number, packet: HandoffPacket) => Promise<unknown>;
}

/**
 * Longest wait, after a report, for the hub to take it before the full /proc scan that follows
 * runs anyway (the hub is away, or slow): the scan is what stops a process that left the run's
 * process group, so it is never held back long.
 */
const AFTER_REPORT_MAX_MS = 100;

/** `apply()`: taken (the newest seq so far), stale (seq already seen: nothing to do), or refused (the run is ending). */
export type ApplyResult = 'accepted' | 'stale' | 'closed';

/**
 * The control state of one run on this worker: applies each `control:apply` once, in seq
 * order, and says when it took hold.
 *
 * - A change is written to `$HANDOFF_CONTROL` (`{seq, state, mode, by?}`, replaced atomically),
 *   which the agent SDK's `checkpoint()` watches — for a hand-back only once the packet is
 *   in the inbox, so a resumed agent always finds it.
 * - `paused` + `hard`: SIGSTOP of every process of the run but the pane's wrapper shell, one
 *   signal per process group, the group's leader and the members last seen by a scan seen
 *   stopped before it is reported → `paused-hard`; then a full scan, off the hot path,
 *   stops anything that left the group (see `RunFreezer`).
 * - `paused` + `soft` (or no mode): waits for the agent's checkpoint marker with this seq →
 *   `paused-soft`; without one within `softGraceMs`, stops the run as above → `paused-hard`.
 *   A run that is already stopped stays stopped (a pause never lets the agent run again).
 * - `operator` (takeover): opens the operator's shell in the run's tmux session (see
 *   `OperatorShell`), then halts the agent like a pause of the given mode (soft by
 *   default) → `operator` once the agent is halted. The shell opens first so that the
 *   operator's keystrokes never reach the agent's pane.
 * - `agent`: after a takeover with `handback`, captures the operator shell's context,
 *   closes the shell, appends the hand-back packet to the inbox, then continues the run →
 *   `agent` with `handoff` (the redacted context). Without `handback` it closes any shell
 *   and continues the run → `agent`.
 * - The status line shows `PAUSED FOR OPERATOR (by <name>)` or `OPERATOR <name> HAS CONTROL (…)`.
 *
 * Changes apply one after another; one that arrives while an older one is still being
 * applied supersedes it, and only the newest gets its `control:applied`.
 */
export class RunControl {
  private readonly runId: string;
  private readonly log: Logger;
  private readonly onApplied: RunControlOptions['onApplied'];
  private readonly clock: Clock;
  private readonly now: () => number;
  private readonly suspendTimeoutMs: number;
  private readonly scrollbackSeq: () => number;
  private readonly deliverHandoff: RunControlOptions['deliverHandoff'];
  private readonly procs: ProcReader | undefined;

  private target: ControlTarget | null = null;
  private freezer: RunFreezer | null = null;
  /** The newest change accepted (applied, being applied, or waiting for the run to start). */
  private desired: ControlApply | null = null;
  /** Seq of the change last taken up by `enact()`. */
  private enactedSeq = 0;
  /** Whether this control stopped (SIGSTOP) the run's processes. */
  private frozen = false;
  /** Correlation id of the takeover in force: a hand-back that comes without one belongs to it. */
  private takeoverCorrelationId: string | null = null;
  private softWait: { change: ControlApply; timer: TimerHandle; watcher: FSWatcher | null } | null = null;
  private work: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(opts: RunControlOptions) {
    this.runId = opts.runId;
    this.log = opts.logger;
    this.onApplied = opts.onApplied;
    const clock = opts.clock ?? systemClock;
    this.clock = clock;
    this.now = () => clock.now();
    this.suspendTimeoutMs = opts.suspendTimeoutMs ?? 1000;
    this.scrollbackSeq = opts.scrollbackSeq;
    this.deliverHandoff = opts.deliverHandoff;
    this.procs = opts.procs;
  }

  /** The newest seq accepted (0: none). */
  get seq(): number {
    return this.desired?.seq ?? 0;
  }

  /** Whether the run's processes are stopped by a hard pause (or an escalated soft one). */
  get stopped(): boolean {
    return this.frozen;
  }

  /**
   * Takes a desired control state. Idempotent by seq: a seq at or below the newest one
   * accepted is `stale` and changes nothing. Before `attach()`, the change waits for the run.
   */
  apply(change: ControlApply): ApplyResult {
    if (this.closed) return 'closed';
    if (change.seq <= this.seq) return 'stale';
    this.desired = change;
    this.log.info(
      { seq: change.seq, state: change.state, mode: change.mode, by: change.by?.name, correlationId: change.correlationId, handback: change.handback !== null },
      'control change',
    );
    if (this.target) this.schedule();
    return 'accepted';
  }

  /**
   * The run started: apply what is desired (if anything came before it). `stopped`: a
   * re-adopted run whose processes a previous worker's hard pause left stopped — a resume
   * must continue them.
   */
  attach(target: ControlTarget, stopped = false): void {
    if (this.target || this.closed) return;
    this.target = target;
    this.freezer = new RunFreezer({ rootPid: target.pid, commandGroup: () => target.commandGroup(), reader: this.procs, now: Date.now }); // a bounded wait on the kernel: real time, whatever the worker's clock
    this.frozen = stopped;
    if (stopped) this.freezer.adoptStopped();
    this.refreshProcesses();
    if (this.desired) this.schedule();
  }

  /** Stops applying anything (the run is being cancelled or ended). A stopped run stays so: the cancel continues it. */
  close(): void {
    this.closed = true;
    this.stopSoftWait();
  }

  /** Resolves once every change taken so far has been acted upon (for tests and shutdown). */
  idle(): Promise<void> {
    return this.work;
  }

  private schedule(): void {
    this.work = this.work
      .then(() => this.enact())
      .catch((err: unknown) => this.log.error({ err }, 'control change failed on the worker'));
  }

  private async enact(): Promise<void> {
    const change = this.desired;
    const target = this.target;
    if (!change || !target || change.seq === this.enactedSeq || this.closed || target.ending) return;
    this.enactedSeq = change.seq;
    this.stopSoftWait();
    if (change.state === 'agent') {
      await this.giveBack(change, target);
      this.takeoverCorrelationId = null;
      return;
    }
    if (change.state === 'operator') this.takeoverCorrelationId = change.correlationId ?? this.takeoverCorrelationId;

    const soft = change.mode !== 'hard';
    writeControlFile(target.dir, { seq: change.seq, state: change.state, mode: soft ? 'soft' : 'hard', ...(change.by ? { by: change.by } : {}) });
    const halted = this.frozen || !soft;
    if (change.state === 'operator') {
      const operator = change.by ?? { id: '', name: 'an operator' };
      // The banner is for viewers and does not gate the report: the status line updates in order on its own.
      void target.status.setBanner(operatorBanner(operator.name, halted));
      try {
        await target.openOperatorShell(operator, halted ? 'paused' : 'pausing');
      } catch (err) {
        // The agent is still halted; the operator's next keystroke tries again (see TmuxRun.input).
        this.log.error({ err, seq: change.seq }, 'could not open the operator shell');
      }
    } else {
      // Paused after a takeover: the operator no longer has control.
      this.takeoverCorrelationId = null;
      await target.closeOperatorShell();
    }
    if (!halted) {
      this.pausedBanner(change, target);
      this.startSoftWait(change, target);
      return;
    }
    if (!(await this.freeze(change.seq))) return;
    const taken = this.halted(change, 'paused-hard');
    this.afterReport(change.seq, taken, () => {
      if (change.state === 'paused') this.pausedBanner(change, target);
      this.sweep(change.seq);
    });
  }

  private pausedBanner(change: ControlApply, target: ControlTarget): void {
    void target.status.setBanner(`PAUSED FOR OPERATOR (by ${change.by?.name ?? 'an operator'})`);
  }

  /**
   * Runs `then` — the status line, the full /proc scan — once the hub took the report of `seq`,
   * or after `AFTER_REPORT_MAX_MS`: each costs the host's cores (tmux redraws, every process
   * read), which the hub needs right then to record the report and tell the dashboards. Not
   * when a newer change came meanwhile: that one does its own.
   */
  private afterReport(seq: number, taken: Promise<void>, then: () => void): void {
    let pending = true;
    const go = () => {
      if (!pending) return;
      pending = false;
      timer.cancel();
      if (this.stillWanted(seq)) then();
    };
    const timer = this.clock.setTimeout(go, AFTER_REPORT_MAX_MS);
    void taken.then(go);
  }

  /**
   * Control back to the agent. A hand-back first captures the context and closes the
   * operator's shell, then puts the packet in the inbox; only then does the agent go on.
   */
  private async giveBack(change: ControlApply, target: ControlTarget): Promise<void> {
    const correlationId = change.correlationId ?? this.takeoverCorrelationId;
    const handoff = change.handback ? await this.handBack(change.seq, change.handback, correlationId, target) : undefined;
    if (!change.handback) await target.closeOperatorShell();
    writeControlFile(target.dir, { seq: change.seq, state: 'agent', mode: null });
    // Continue whatever is stopped; an agent halted at a checkpoint goes on by itself,
    // since its checkpoint watches the control file that now says `agent`.
    if (this.frozen) {
      await this.freezer?.resume();
      this.frozen = false;
    }
    this.afterReport(change.seq, this.report(change, 'agent', handoff), () => {
      void target.status.setBanner(null);
      this.refreshProcesses();
    });
  }

  /** Remembers the run's processes for the next hard pause, off the hot path (see `RunFreezer.refresh`). */
  private refreshProcesses(): void {
    this.freezer?.refresh().catch((err: unknown) => this.log.warn({ err }, 'could not list the run’s processes'));
  }

  private async handBack(seq: number, handback: Handback, correlationId: string | null, target: ControlTarget): Promise<HandoffContext> {
    const captured = await target.captureContext().catch((err: unknown) => {
      this.log.error({ err, seq }, 'could not capture the terminal’s context for the hand-back');
      return { cwd: null, env: {} };
    });
    const { context, omitted } = handoffContext(captured, this.scrollbackSeq());
    if (omitted > 0) this.log.warn({ seq, omitted }, 'the hand-back context was too large: some variables or commands were left out');
    await target.closeOperatorShell();
    try {
      await this.deliverHandoff(seq, handoffPacket(this.runId, handback, correlationId, context));
      this.log.info({ seq, correlationId, cwd: context.cwd, scrollbackSeq: context.scrollbackSeq }, 'hand-back packet delivered to the inbox');
    } catch (err) {
      // The agent still gets control back: a run held paused because its inbox failed would help nobody.
      this.log.error({ err, seq, correlationId }, 'could not append the hand-back packet to the inbox');
    }
    return context;
  }

  /** The agent is halted (at a checkpoint, or stopped): the change took hold. */
  private halted(change: ControlApply, how: 'paused-soft' | 'paused-hard'): Promise<void> {
    if (change.state !== 'operator') return this.report(change, how);
    const taken = this.report(change, 'operator');
    this.afterReport(change.seq, taken, () => void this.target?.status.setBanner(operatorBanner(change.by?.name ?? 'an operator', true)));
    return taken;
  }

  /** SIGSTOPs the run unless a newer change or the run's end came first. Returns whether it still applies. */
  private async freeze(seq: number): Promise<boolean> {
    const target = this.target;
    const freezer = this.freezer;
    if (!target || !freezer || this.closed || target.ending || this.desired?.seq !== seq) return false;
    this.frozen = true;
    const result = await freezer.stop(this.suspendTimeoutMs, () => this.stillWanted(seq));
    if (result === 'timeout') this.log.warn({ seq }, 'some processes of the run did not stop in time (uninterruptible?); they stop when they can');
    return this.desired?.seq === seq && !this.closed;
  }

  /**
   * After a stop was reported: the full scan, off the hot path, for processes that left the
   * run's process group since the last one. It never runs into a newer change: it checks
   * before each signal that this pause is still the one in force.
   */
  private sweep(seq: number): void {
    const freezer = this.freezer;
    if (!freezer) return;
    freezer
      .sweep(this.suspendTimeoutMs, () => this.stillWanted(seq))
      .then((stopped) => {
        if (stopped > 0) this.log.warn({ seq, stopped }, 'stopped processes of the run that had left its process group');
      })
      .catch((err: unknown) => this.log.error({ err, seq }, 'could not sweep the run for processes still running'));
  }

  private stillWanted(seq: number): boolean {
    return this.desired?.seq === seq && !this.closed && !this.target?.ending;
  }

  /**
   * Soft pause: the agent's `checkpoint()` sees the control file, writes the checkpoint
   * marker with the seq it honours and blocks. The marker is watched (no polling); it is
   * also read once at once, in case the agent wrote it before the watch began.
   */
  private startSoftWait(change: ControlApply, target: ControlTarget): void {
    let watcher: FSWatcher | null = null;
    try {
      watcher = watch(target.dir, (_event, name) => {
        if (name === null || name === RunFiles.checkpoint) void this.checkMarker(change, target);
      });
      watcher.on('error', (err) => this.log.warn({ err }, 'cannot watch for the agent’s checkpoint; the pause escalates after its grace'));
    } catch (err) {
      this.log.warn({ err }, 'cannot watch for the agent’s checkpoint; the pause escalates after its grace');
    }
    const timer = this.clock.setTimeout(() => this.escalate(change), change.softGraceMs);
    this.softWait = { change, timer, watcher };
    void this.checkMarker(change, target);
  }

  private async checkMarker(change: ControlApply, target: ControlTarget): Promise<void> {
    const marker = await readCheckpoint(target.dir);
    if (!marker || marker.seq < change.seq || this.softWait?.change !== change) return;
    this.stopSoftWait();
    this.log.info({ seq: change.seq, agentPid: marker.pid }, 'agent halted at a checkpoint');
    void this.halted(change, 'paused-soft');
  }

  private escalate(change: ControlApply): void {
    if (this.softWait?.change !== change) return;
    this.stopSoftWait();
    this.log.info({ seq: change.seq }, 'no checkpoint within the soft pause grace: stopping the run');
    this.work = this.work
      .then(async () => {
        if (!(await this.freeze(change.seq))) return;
        this.afterReport(change.seq, this.halted(change, 'paused-hard'), () => this.sweep(change.seq));
      })
      .catch((err: unknown) => this.log.error({ err }, 'could not escalate the pause'));
  }

  private stopSoftWait(): void {
    if (!this.softWait) return;
    this.softWait.timer.cancel();
    this.softWait.watcher?.close();
    this.softWait = null;
  }

  /**
   * Reports `change` applied; its `changedAt` and `correlationId` go back as the hub sent them.
   * Resolves once the hub took it (at once when `onApplied` does not say).
   */
  private report(change: ControlApply, effective: EffectiveControl, handoff?: HandoffContext): Promise<void> {
    if (this.closed) return Promise.resolve();
    const { seq, changedAt, correlationId } = change;
    const report = {
      runId: this.runId, seq, effective, appliedAt: Math.floor(this.now()),
      ...(changedAt !== undefined ? { changedAt } : {}), ...(correlationId ? { correlationId } : {}),
    };
    const taken = this.onApplied(handoff ? { ...report, handoff } : report);
    // Logged once the report is on its way: a log line is a write, and the hub waits for the report.
    this.log.info({ seq, effective }, 'control applied');
    return taken ?? Promise.resolve();
  }
}

/** The status line during a takeover. */
export function operatorBanner(name: string, agentHalted: boolean): string {
  return `OPERATOR ${name} HAS CONTROL (${agentHalted ? 'agent paused' : 'pausing the agent'})`;
}

/**
 * Replaces the run's control file atomically: a reader sees the old or the new state, never
 * half of one. Synchronous on purpose: two small local file operations on a control change's
 * hot path, where a round through the thread pool costs more than the write.
 */
export function writeControlFile(dir: string, control: ControlFile): void {
  const path = join(dir, RunFiles.control);
  const tmp = `${path}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(control)}\n`, { mode: 0o600 });
  renameSync(tmp, path);
}

/** The agent's checkpoint marker (`{seq, at, pid}`), or null when absent or unreadable. */
export async function readCheckpoint(dir: string): Promise<{ seq: number; pid: number | null } | null> {
  const text = await readFile(join(dir, RunFiles.checkpoint), 'utf8').catch(() => null);
  if (text === null) return null;
  try {
    const parsed: unknown = JSON.parse(text);
    if (typeof parsed !== 'object' || parsed === null) return null;
    const { seq, pid } = parsed as Record<string, unknown>;
    if (typeof seq !== 'number' || !Number.isInteger(seq)) return null;
    return { seq, pid: typeof pid === 'number' ? pid : null };
  } catch {
    return null; // being replaced: the rename's event follows
  }
}
