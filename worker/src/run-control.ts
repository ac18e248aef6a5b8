import { watch, type FSWatcher } from 'node:fs';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ControlApply, ControlState, HandoffContext, PauseMode } from '@handoff/shared';
import { handoffContext, handoffPacket, type CapturedContext, type Handback, type HandoffPacket } from './handoff-packet.js';
import type { PayloadOf } from './hub-link.js';
import type { Logger } from './logger.js';
import type { Operator } from './operator-shell.js';
import { resumeRun, suspendRun } from './process-tree.js';
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
  /** A control change took hold: report it to the hub (reliably). */
  onApplied: (report: PayloadOf<'control:applied'>) => void;
  /** Worker clock for `appliedAt`. Default `Date.now`. */
  now?: () => number;
  /** How long a hard pause may take to see every process stopped, in ms. Default 1000. */
  suspendTimeoutMs?: number;
  /** The run's newest terminal frame seq: a hand-back's scrollback reference into the recording. */
  scrollbackSeq: () => number;
  /** Appends a hand-back packet to `$HANDOFF_INBOX`, at most once per control seq. */
  deliverHandoff: (seq: number, packet: HandoffPacket) => Promise<unknown>;
}

/** `apply()`: taken (the newest seq so far), stale (seq already seen: nothing to do), or refused (the run is ending). */
export type ApplyResult = 'accepted' | 'stale' | 'closed';

/**
 * The control state of one run on this worker: applies each `control:apply` once, in seq
 * order, and says when it took hold.
 *
 * - A change is written to `$HANDOFF_CONTROL` (`{seq, state, mode, by?}`, replaced atomically),
 *   which the agent SDK's `checkpoint()` watches — for a hand-back only once the packet is
 *   in the inbox, so a resumed agent always finds it.
 * - `paused` + `hard`: SIGSTOP of every process of the run but the pane's wrapper shell
 *   (see `suspendRun`), seen stopped in /proc before it is reported → `paused-hard`.
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
  private readonly now: () => number;
  private readonly suspendTimeoutMs: number;
  private readonly scrollbackSeq: () => number;
  private readonly deliverHandoff: RunControlOptions['deliverHandoff'];

  private target: ControlTarget | null = null;
  /** The newest change accepted (applied, being applied, or waiting for the run to start). */
  private desired: ControlApply | null = null;
  /** Seq of the change last taken up by `enact()`. */
  private enactedSeq = 0;
  /** Whether this control stopped (SIGSTOP) the run's processes. */
  private frozen = false;
  /** Correlation id of the takeover in force: a hand-back that comes without one belongs to it. */
  private takeoverCorrelationId: string | null = null;
  private softWait: { change: ControlApply; timer: ReturnType<typeof setTimeout>; watcher: FSWatcher | null } | null = null;
  private work: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(opts: RunControlOptions) {
    this.runId = opts.runId;
    this.log = opts.logger;
    this.onApplied = opts.onApplied;
    this.now = opts.now ?? Date.now;
    this.suspendTimeoutMs = opts.suspendTimeoutMs ?? 1000;
    this.scrollbackSeq = opts.scrollbackSeq;
    this.deliverHandoff = opts.deliverHandoff;
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
    this.frozen = stopped;
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
    await writeControlFile(target.dir, { seq: change.seq, state: change.state, mode: soft ? 'soft' : 'hard', ...(change.by ? { by: change.by } : {}) });
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
      void target.status.setBanner(`PAUSED FOR OPERATOR (by ${change.by?.name ?? 'an operator'})`);
    }
    if (!halted) {
      this.startSoftWait(change, target);
      return;
    }
    if (!(await this.freeze(change.seq))) return;
    this.halted(change, 'paused-hard');
  }

  /**
   * Control back to the agent. A hand-back first captures the context and closes the
   * operator's shell, then puts the packet in the inbox; only then does the agent go on.
   */
  private async giveBack(change: ControlApply, target: ControlTarget): Promise<void> {
    const correlationId = change.correlationId ?? this.takeoverCorrelationId;
    const handoff = change.handback ? await this.handBack(change.seq, change.handback, correlationId, target) : undefined;
    if (!change.handback) await target.closeOperatorShell();
    await writeControlFile(target.dir, { seq: change.seq, state: 'agent', mode: null });
    // Continue whatever is stopped; an agent halted at a checkpoint goes on by itself,
    // since its checkpoint watches the control file that now says `agent`.
    if (this.frozen) {
      await resumeRun(target.pid);
      this.frozen = false;
    }
    void target.status.setBanner(null);
    this.report(change.seq, 'agent', handoff);
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
  private halted(change: ControlApply, how: 'paused-soft' | 'paused-hard'): void {
    if (change.state === 'operator') {
      void this.target?.status.setBanner(operatorBanner(change.by?.name ?? 'an operator', true));
      this.report(change.seq, 'operator');
      return;
    }
    this.report(change.seq, how);
  }

  /** SIGSTOPs the run unless a newer change or the run's end came first. Returns whether it still applies. */
  private async freeze(seq: number): Promise<boolean> {
    const target = this.target;
    if (!target || this.closed || target.ending || this.desired?.seq !== seq) return false;
    this.frozen = true;
    const all = await suspendRun(target.pid, this.suspendTimeoutMs);
    if (!all) this.log.warn({ seq }, 'some processes of the run did not stop in time (uninterruptible?); they stop when they can');
    return this.desired?.seq === seq && !this.closed;
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
    const timer = setTimeout(() => this.escalate(change), change.softGraceMs);
    this.softWait = { change, timer, watcher };
    void this.checkMarker(change, target);
  }

  private async checkMarker(change: ControlApply, target: ControlTarget): Promise<void> {
    const marker = await readCheckpoint(target.dir);
    if (!marker || marker.seq < change.seq || this.softWait?.change !== change) return;
    this.stopSoftWait();
    this.log.info({ seq: change.seq, agentPid: marker.pid }, 'agent halted at a checkpoint');
    this.halted(change, 'paused-soft');
  }

  private escalate(change: ControlApply): void {
    if (this.softWait?.change !== change) return;
    this.stopSoftWait();
    this.log.info({ seq: change.seq }, 'no checkpoint within the soft pause grace: stopping the run');
    this.work = this.work
      .then(async () => {
        if (await this.freeze(change.seq)) this.halted(change, 'paused-hard');
      })
      .catch((err: unknown) => this.log.error({ err }, 'could not escalate the pause'));
  }

  private stopSoftWait(): void {
    if (!this.softWait) return;
    clearTimeout(this.softWait.timer);
    this.softWait.watcher?.close();
    this.softWait = null;
  }

  private report(seq: number, effective: EffectiveControl, handoff?: HandoffContext): void {
    if (this.closed) return;
    this.log.info({ seq, effective }, 'control applied');
    const report = { runId: this.runId, seq, effective, appliedAt: Math.floor(this.now()) };
    this.onApplied(handoff ? { ...report, handoff } : report);
  }
}

/** The status line during a takeover. */
export function operatorBanner(name: string, agentHalted: boolean): string {
  return `OPERATOR ${name} HAS CONTROL (${agentHalted ? 'agent paused' : 'pausing the agent'})`;
}

/** Replaces the run's control file atomically: a reader sees the old or the new state, never half of one. */
export async function writeControlFile(dir: string, control: ControlFile): Promise<void> {
  const path = join(dir, RunFiles.control);
  const tmp = `${path}.tmp`;
  await writeFile(tmp, `${JSON.stringify(control)}\n`, { mode: 0o600 });
  await rename(tmp, path);
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
