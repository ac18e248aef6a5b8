import { metrics } from '../metrics.js';
import { AppError, ErrorCode, type ControlBody, type ControlState, type HandoffContext, type Run } from '@handoff/shared';
import { RunSchema, WriteGrantSchema, type RunRow, type WriteGrantRow } from '../db/entities.js';
import { em, type Em, type Orm } from '../db/orm.js';
import { ControlEvent, controlTransition } from '../domain/control-machine.js';
import type { PolicyAction } from '../domain/policy.js';
import { GrantEvent } from '../domain/write-grant-machine.js';
import { appendAudit } from './audit.js';
import { uuidv7 } from './ids.js';
import type { Notifier } from './notifier.js';
import type { CommandOptions, PolicyGate, UserActor } from './policy-gate.js';
import { requireRun, type RunService } from './runs.js';
import { grantView } from './views.js';
import type { WriteGrantService } from './write-grants.js';

export interface ControlOptions {
  /** PAUSE_SOFT_GRACE: a soft pause escalates to hard after this long without a checkpoint. */
  softGraceMs: number;
}

const POLICY_ACTION: Record<ControlBody['action'], PolicyAction> = {
  pause: 'control.pause',
  resume: 'control.resume',
  takeover: 'takeover',
  handback: 'handback',
};

/** What one control command changed, besides the control state itself. */
interface Changed {
  row: RunRow;
  grants: WriteGrantRow[];
  ended: WriteGrantRow[];
}

/**
 * Run control, pushed (never polled): the desired state is persisted with a new
 * `controlSeq` and its audit row in one transaction, then pushed to the worker, which
 * acks and reports `control:applied`; a worker that was away gets it on reconnect.
 *
 * Takeover (DESIGN.md §2 Handoff) = pause (soft, escalating) + a write grant for the
 * taker + control `operator` naming them, in one transaction; hand-back (controller only,
 * with a summary) revokes the grant and pushes `agent` with the hand-back note, from which
 * the worker builds the agent's handoff packet. A takeover and its hand-back share one
 * correlation id, carried by every audit row of the handoff.
 */
export class ControlService {
  gate!: PolicyGate;

  constructor(
    private readonly orm: Orm,
    private readonly runs: RunService,
    private readonly grants: WriteGrantService,
    private readonly notifier: Notifier,
    private readonly options: ControlOptions,
  ) {}

  async apply(actor: UserActor, runId: string, body: ControlBody, opts: CommandOptions = {}): Promise<Run> {
    const event = ControlEvent[body.action];
    const grantTtlMs = event === ControlEvent.takeover ? this.grants.requestedTtl(body.ttlMinutes) : 0;
    const current = await requireRun(em(this.orm), runId);
    // Handing back someone else's takeover is its own privilege (admins, by default).
    const forced = event === ControlEvent.handback && body.force === true && current.controllerId !== null && current.controllerId !== actor.id;
    if (!opts.approved) {
      const ttl = event === ControlEvent.takeover ? { ttlMinutes: Math.ceil(grantTtlMs / 60_000) } : {};
      await this.gate.check(forced ? 'control.handback.force' : POLICY_ACTION[body.action], actor, { runId, runLabels: current.labels, ...ttl }, { ...body });
    }
    const { row, grants, ended } = await em(this.orm).transactional(async (tx): Promise<Changed> => {
      const run = await requireRun(tx, runId, { refresh: true });
      if (run.status !== 'assigned' && run.status !== 'running') {
        throw new AppError({ code: ErrorCode.STATE_CONFLICT, message: `run ${runId} is ${run.status}: it cannot be ${body.action === 'handback' ? 'handed back' : `${body.action}d`}` });
      }
      const next = controlTransition(run.controlState as ControlState, event);
      if (event === ControlEvent.handback && run.controllerId !== actor.id && !(body.force && run.controllerId)) {
        throw new AppError({ code: ErrorCode.STATE_CONFLICT, message: `only the controller (${run.controlBy?.name ?? 'another operator'}) can hand run ${runId} back; an admin can force it (force: true)` });
      }
      const forcedFrom = event === ControlEvent.handback && run.controllerId && run.controllerId !== actor.id ? { id: run.controllerId, name: run.controlBy?.name ?? run.controllerId } : null;
      // A hand-back continues its takeover's correlation; every other change starts one.
      // An approved command continues its approval's correlation.
      const correlationId = event === ControlEvent.handback && run.controlCorrelationId ? run.controlCorrelationId : (opts.correlationId ?? uuidv7());
      const by = { id: actor.id, name: actor.name };
      const seq = run.controlSeq + 1;
      const changes: Partial<RunRow> = {
        controlState: next,
        controlMode: event === ControlEvent.pause || event === ControlEvent.takeover ? (body.mode ?? 'soft') : null,
        controlSeq: seq,
        controlChangedAt: new Date(),
        controlBy: by,
        controlCorrelationId: correlationId,
        controllerId: next === 'operator' ? actor.id : null,
        handback: event === ControlEvent.handback ? { summary: body.summary ?? '', by, at: new Date().toISOString(), ...(forcedFrom ? { forcedFrom } : {}) } : null,
        // The operator the agent asked for has come.
        ...(event === ControlEvent.takeover ? { needsOperatorReason: null, needsOperatorAt: null } : {}),
      };
      // Conditional on the seq we read: concurrent commands on any node apply one at a time.
      const n = await tx.nativeUpdate(RunSchema, { id: runId, controlSeq: run.controlSeq }, changes);
      if (n !== 1) throw new AppError({ code: ErrorCode.STATE_CONFLICT, message: 'the run\'s control changed meanwhile; retry' });
      await appendAudit(tx, {
        runId, actor, correlationId, action: `control.${body.action}`,
        metadata: { seq, from: run.controlState, to: next, mode: changes.controlMode, ...(body.summary ? { summary: body.summary } : {}), ...(forcedFrom ? { forced: true, controller: forcedFrom.name } : {}) },
      });
      const result: Changed = { row: Object.assign(run, changes), grants: [], ended: [] };
      if (event === ControlEvent.takeover) {
        const { grant } = await this.grants.grantIn(tx, actor, runId, grantTtlMs, { preferWeb: true, correlationId });
        result.grants.push(grant);
        await appendAudit(tx, { runId, actor, correlationId, action: 'handoff.initiated', metadata: { seq, controller: actor.name, grantId: grant.id, mode: changes.controlMode } });
      }
      if (event === ControlEvent.handback) result.ended = await this.endGrantsOf(tx, actor, forcedFrom?.id ?? actor.id, runId);
      return result;
    });
    this.push(row);
    for (const g of grants) this.notifier.grantUpdated(grantView(g));
    if (ended.length) await this.grants.afterEnd(ended);
    return this.runs.publish(runId);
  }

  /**
   * The worker applied `seq` (`effective`: how it took hold). Audits the push → applied
   * delay; after a hand-back, also the context it captured for the agent (`handoff.completed`).
   */
  async onApplied(workerId: string, runId: string, seq: number, effective: string, appliedAt: number, handoff?: HandoffContext): Promise<void> {
    const run = await this.runs.assertOwned(workerId, runId, 'control:applied');
    const current = run.controlSeq === seq;
    const correlation = current && run.controlCorrelationId ? { correlationId: run.controlCorrelationId } : {};
    const advanced = await em(this.orm).transactional(async (tx) => {
      const rows = await tx.execute<{ id: string }[]>(
        `update runs set control_applied_seq = ? where id = ? and control_applied_seq < ? and control_seq >= ? returning id`,
        [seq, runId, seq, seq],
      );
      const delayMs = run.controlChangedAt && current ? Math.max(0, appliedAt - run.controlChangedAt.getTime()) : null;
      if (delayMs !== null && rows.length > 0) metrics.controlPush.observe({ effective }, delayMs / 1000);
      const actor = { type: 'worker' as const, id: workerId };
      await appendAudit(tx, { runId, actor, ...correlation, action: 'control.applied', metadata: { seq, effective, delayMs, advanced: rows.length > 0 } });
      if (handoff && rows.length > 0) {
        await appendAudit(tx, {
          runId, actor, ...correlation, action: 'handoff.completed',
          metadata: { seq, by: run.handback?.by.name ?? null, cwd: handoff.cwd, env: handoff.env, scrollbackSeq: handoff.scrollbackSeq, commands: handoff.commands, recording: `/api/task-runs/${runId}/recording.cast` },
        });
      }
      return rows.length > 0;
    });
    if (advanced) await this.runs.publish(runId);
  }

  /** On (re)connect: re-push the desired state of every run the worker has not applied yet. */
  async resync(workerId: string): Promise<void> {
    const pending = await em(this.orm).find(RunSchema, { workerId, status: { $in: ['assigned', 'running'] }, controlSeq: { $gt: 0 } });
    for (const run of pending) if (run.controlAppliedSeq < run.controlSeq) this.push(run);
  }

  /** The controller's live grants on the run end with the hand-back (`actor` did it: the controller, or an admin forcing it). */
  private async endGrantsOf(tx: Em, actor: UserActor, controllerId: string, runId: string): Promise<WriteGrantRow[]> {
    const live = await tx.find(WriteGrantSchema, { runId, granteeId: controllerId, status: 'active' });
    const ended: WriteGrantRow[] = [];
    for (const g of live) {
      const row = await this.grants.endIn(tx, g, GrantEvent.revoke, 'handback', actor);
      if (row) ended.push(row);
    }
    return ended;
  }

  private push(run: RunRow): void {
    if (!run.workerId) return; // not assigned yet: pushed on hello/assignment
    this.notifier.controlApply(run.workerId, {
      runId: run.id,
      seq: run.controlSeq,
      state: run.controlState as ControlState,
      mode: (run.controlMode as 'soft' | 'hard' | null) ?? null,
      softGraceMs: this.options.softGraceMs,
      by: run.controlBy ?? null,
      ...(run.controlCorrelationId ? { correlationId: run.controlCorrelationId } : {}),
      handback: run.controlState === 'agent' ? (run.handback ?? null) : null,
    });
  }
}
