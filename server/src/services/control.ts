import { AppError, ErrorCode, type ControlBody, type ControlState, type Run } from '@handoff/shared';
import { RunSchema, type RunRow } from '../db/entities.js';
import { em, type Orm } from '../db/orm.js';
import { ControlEvent, controlTransition } from '../domain/control-machine.js';
import { appendAudit, type Actor } from './audit.js';
import { uuidv7 } from './ids.js';
import type { Notifier } from './notifier.js';
import type { PolicyGate, UserActor } from './policy-gate.js';
import type { RunService } from './runs.js';

export interface ControlOptions {
  /** PAUSE_SOFT_GRACE: a soft pause escalates to hard after this long without a checkpoint. */
  softGraceMs: number;
}

/**
 * Run control, pushed (never polled): the desired state is persisted with a new
 * `controlSeq` and its audit row in one transaction, then pushed to the worker, which
 * acks and reports `control:applied`; a worker that was away gets it on reconnect.
 */
export class ControlService {
  gate!: PolicyGate;

  constructor(
    private readonly orm: Orm,
    private readonly runs: RunService,
    private readonly notifier: Notifier,
    private readonly options: ControlOptions,
  ) {}

  async apply(actor: UserActor, runId: string, body: ControlBody): Promise<Run> {
    const event = body.action === 'pause' ? ControlEvent.pause : ControlEvent.resume;
    const current = await em(this.orm).findOne(RunSchema, { id: runId });
    if (!current) throw new AppError({ code: ErrorCode.NOT_FOUND, message: `run ${runId} not found` });
    await this.gate.check(body.action === 'pause' ? 'control.pause' : 'control.resume', actor, { runId, runLabels: current.labels }, { ...body });
    const row = await em(this.orm).transactional(async (tx) => {
      const run = await tx.findOneOrFail(RunSchema, { id: runId }, { refresh: true });
      if (run.status !== 'assigned' && run.status !== 'running') {
        throw new AppError({ code: ErrorCode.STATE_CONFLICT, message: `run ${runId} is ${run.status}: it cannot be ${body.action}d` });
      }
      const next = controlTransition(run.controlState as ControlState, event);
      const mode = event === ControlEvent.pause ? (body.mode ?? 'soft') : null;
      const seq = run.controlSeq + 1;
      // Conditional on the seq we read: concurrent commands on any node apply one at a time.
      const n = await tx.nativeUpdate(RunSchema, { id: runId, controlSeq: run.controlSeq }, { controlState: next, controlMode: mode, controlSeq: seq, controlChangedAt: new Date() });
      if (n !== 1) throw new AppError({ code: ErrorCode.STATE_CONFLICT, message: 'the run\'s control changed meanwhile; retry' });
      await appendAudit(tx, { runId, actor, correlationId: uuidv7(), action: `control.${body.action}`, metadata: { seq, from: run.controlState, to: next, mode } });
      return tx.findOneOrFail(RunSchema, { id: runId }, { refresh: true });
    });
    this.push(row, actor);
    return this.runs.publish(runId);
  }

  /** The worker applied `seq` (`effective`: how it took hold). Audits the push → applied delay. */
  async onApplied(workerId: string, runId: string, seq: number, effective: string, appliedAt: number): Promise<void> {
    const run = await this.runs.assertOwned(workerId, runId, 'control:applied');
    const advanced = await em(this.orm).transactional(async (tx) => {
      const rows = await tx.execute<{ id: string }[]>(
        `update runs set control_applied_seq = ? where id = ? and control_applied_seq < ? and control_seq >= ? returning id`,
        [seq, runId, seq, seq],
      );
      const delayMs = run.controlChangedAt && run.controlSeq === seq ? Math.max(0, appliedAt - run.controlChangedAt.getTime()) : null;
      await appendAudit(tx, { runId, actor: { type: 'worker', id: workerId }, action: 'control.applied', metadata: { seq, effective, delayMs, advanced: rows.length > 0 } });
      return rows.length > 0;
    });
    if (advanced) await this.runs.publish(runId);
  }

  /** On (re)connect: re-push the desired state of every run the worker has not applied yet. */
  async resync(workerId: string): Promise<void> {
    const pending = await em(this.orm).find(RunSchema, { workerId, status: { $in: ['assigned', 'running'] }, controlSeq: { $gt: 0 } });
    for (const run of pending) if (run.controlAppliedSeq < run.controlSeq) this.push(run, null);
  }

  private push(run: RunRow, by: Actor | UserActor | null): void {
    if (!run.workerId) return; // not assigned yet: pushed on hello/assignment
    this.notifier.controlApply(run.workerId, {
      runId: run.id,
      seq: run.controlSeq,
      state: run.controlState as ControlState,
      mode: (run.controlMode as 'soft' | 'hard' | null) ?? null,
      softGraceMs: this.options.softGraceMs,
      by: by && 'name' in by ? { id: by.id, name: by.name } : null,
    });
  }
}
