import { watch, type FSWatcher } from 'node:fs';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ControlApply, ControlState, PauseMode } from '@handoff/shared';
import type { PayloadOf } from './hub-link.js';
import type { Logger } from './logger.js';
import { resumeRun, suspendRun } from './process-tree.js';
import { RunFiles } from './run-script.js';

/** How a control state took hold on the worker (`control:applied`). */
export type EffectiveControl = PayloadOf<'control:applied'>['effective'];

/** What the agent reads from `$HANDOFF_CONTROL` (see agent-sdk/index.d.ts). */
export interface ControlFile {
  seq: number;
  state: ControlState;
  /** How a pause halts the agent; null unless `state` is `paused`. */
  mode: PauseMode | null;
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
}

/** `apply()`: taken (the newest seq so far), stale (seq already seen: nothing to do), or refused (the run is ending). */
export type ApplyResult = 'accepted' | 'stale' | 'closed';

/**
 * The control state of one run on this worker: applies each `control:apply` once, in seq
 * order, and says when it took hold.
 *
 * - Every change is first written to `$HANDOFF_CONTROL` (`{seq, state, mode}`, replaced
 *   atomically), which the agent SDK's `checkpoint()` watches.
 * - `agent`: continues the run if it was stopped → `agent`.
 * - `paused` + `hard`, and `operator` (the takeover terminal is not built yet): SIGSTOP of
 *   every process of the run but the pane's wrapper shell (see `suspendRun`), seen stopped
 *   in /proc before it is reported → `paused-hard` / `operator`.
 * - `paused` + `soft` (or no mode): waits for the agent's checkpoint marker with this seq →
 *   `paused-soft`; without one within `softGraceMs`, stops the run as above → `paused-hard`.
 *   A run that is already stopped stays stopped (a pause never lets the agent run again).
 * - A paused run shows `PAUSED FOR OPERATOR (by <name>)` in its tmux status line.
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

  private target: ControlTarget | null = null;
  /** The newest change accepted (applied, being applied, or waiting for the run to start). */
  private desired: ControlApply | null = null;
  /** Seq of the change last taken up by `enact()`. */
  private enactedSeq = 0;
  /** Whether this control stopped (SIGSTOP) the run's processes. */
  private frozen = false;
  private softWait: { seq: number; timer: ReturnType<typeof setTimeout>; watcher: FSWatcher | null } | null = null;
  private work: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(opts: RunControlOptions) {
    this.runId = opts.runId;
    this.log = opts.logger;
    this.onApplied = opts.onApplied;
    this.now = opts.now ?? Date.now;
    this.suspendTimeoutMs = opts.suspendTimeoutMs ?? 1000;
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
    this.log.info({ seq: change.seq, state: change.state, mode: change.mode, by: change.by?.name }, 'control change');
    if (this.target) this.schedule();
    return 'accepted';
  }

  /** The run started: apply what is desired (if anything came before it). */
  attach(target: ControlTarget): void {
    if (this.target || this.closed) return;
    this.target = target;
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
    const soft = change.state === 'paused' && change.mode !== 'hard';
    await writeControlFile(target.dir, {
      seq: change.seq,
      state: change.state,
      mode: change.state === 'paused' ? (soft ? 'soft' : 'hard') : null,
    });

    if (change.state === 'agent') {
      // Continue whatever is stopped; an agent halted at a checkpoint goes on by itself,
      // since its checkpoint watches the control file that now says `agent`.
      if (this.frozen) {
        await resumeRun(target.pid);
        this.frozen = false;
      }
      // The banner is for viewers and does not gate the report: the status line updates in order on its own.
      void target.status.setBanner(null);
      this.report(change.seq, 'agent');
      return;
    }

    void target.status.setBanner(`PAUSED FOR OPERATOR (by ${change.by?.name ?? 'an operator'})`);
    if (soft && !this.frozen) {
      this.startSoftWait(change, target);
      return;
    }
    if (!(await this.freeze(change.seq))) return;
    this.report(change.seq, change.state === 'operator' ? 'operator' : 'paused-hard');
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
    const { seq } = change;
    let watcher: FSWatcher | null = null;
    try {
      watcher = watch(target.dir, (_event, name) => {
        if (name === null || name === RunFiles.checkpoint) void this.checkMarker(seq, target);
      });
      watcher.on('error', (err) => this.log.warn({ err }, 'cannot watch for the agent’s checkpoint; the pause escalates after its grace'));
    } catch (err) {
      this.log.warn({ err }, 'cannot watch for the agent’s checkpoint; the pause escalates after its grace');
    }
    const timer = setTimeout(() => this.escalate(seq), change.softGraceMs);
    this.softWait = { seq, timer, watcher };
    void this.checkMarker(seq, target);
  }

  private async checkMarker(seq: number, target: ControlTarget): Promise<void> {
    const marker = await readCheckpoint(target.dir);
    if (!marker || marker.seq < seq || this.softWait?.seq !== seq) return;
    this.stopSoftWait();
    this.log.info({ seq, agentPid: marker.pid }, 'agent halted at a checkpoint');
    this.report(seq, 'paused-soft');
  }

  private escalate(seq: number): void {
    if (this.softWait?.seq !== seq) return;
    this.stopSoftWait();
    this.log.info({ seq }, 'no checkpoint within the soft pause grace: stopping the run');
    this.work = this.work
      .then(async () => {
        if (await this.freeze(seq)) this.report(seq, 'paused-hard');
      })
      .catch((err: unknown) => this.log.error({ err }, 'could not escalate the pause'));
  }

  private stopSoftWait(): void {
    if (!this.softWait) return;
    clearTimeout(this.softWait.timer);
    this.softWait.watcher?.close();
    this.softWait = null;
  }

  private report(seq: number, effective: EffectiveControl): void {
    if (this.closed) return;
    this.log.info({ seq, effective }, 'control applied');
    this.onApplied({ runId: this.runId, seq, effective, appliedAt: Math.floor(this.now()) });
  }
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
