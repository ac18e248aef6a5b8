import { metrics } from '../metrics.js';
import { AppError, ErrorCode, type Clock, type ControlBody, type ControlState, type Run, type WorkerToHub } from '@handoff/shared';
import { RunSchema, WriteGrantSchema, type RunRow, type WriteGrantRow } from '../infra/db/entities.js';
import { em, type Em, type Orm } from '../infra/db/orm.js';
import { ControlEvent, controlTransition } from '../domain/control-machine.js';
import type { PolicyAction, PolicyDecision } from '../domain/policy.js';
import { GrantEvent } from '../domain/write-grant-machine.js';
import { appendAudit, auditAppendCall, runAuditAppendCall, type AuditAppendCall } from '../audit/audit-append.js';
import { uuidv7 } from '../infra/ids.js';
import type { Notifier } from '../hooks/notifier.js';
import type { CommandOptions, GateContext, PolicyGate, UserActor } from '../policy/policy-gate.js';
import { lockRunForView, readRunForView } from '../runs/run-queries.js';
import type { RunService } from '../runs/run-service.js';
import { grantView, runView } from '../views.js';
import type { WriteGrantService } from '../grants/write-grant-service.js';
import { advanceAppliedSeq, recordAppliedIfCurrent, writeControlChange, writeControlChangeAsSeen, type ControlChange } from './control-queries.js';

/** A worker's `control:applied` report. */
export type AppliedReport = Parameters<WorkerToHub['control:applied']>[0];

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

/** The policy refused a command inside its transaction: rolled back, then refused as the gate does. */
class Refused extends Error {
  constructor(
    readonly action: PolicyAction,
    readonly ctx: GateContext,
    readonly decision: Exclude<PolicyDecision, { decision: 'allow' }>,
  ) {
    super(`${action} refused by the policy`);
  }
}

/** The run's control seq or status moved between the command's read and its write: nothing was written. */
class SeqMoved extends AppError {
  constructor() {
    super({ code: ErrorCode.STATE_CONFLICT, message: 'the run\'s control changed meanwhile; retry' });
  }
}

/** How often a pause or resume reads again after losing a race (see `applyAlone`). */
const ALONE_ATTEMPTS = 3;

/** Runs a node remembers as it last saw them (see `applyAlone`): the one it changed longest ago goes first. */
const SEEN_MAX = 10_000;

/** What a control command decides on. Labels never change; the rest changes only with the control seq — or the status. */
type DecisionInput = Pick<RunRow, 'status' | 'labels' | 'controlState' | 'controlSeq' | 'controllerId' | 'controlBy' | 'controlCorrelationId'>;

/** A command decided: what it writes. */
interface Decided {
  changes: ControlChange;
  audit: AuditAppendCall;
  seq: number;
  correlationId: string;
  forcedFrom: { id: string; name: string } | null;
}

/** What one control command changed, besides the control state itself. */
interface Changed {
  row: RunRow;
  /** The run's view as the transaction left it (before any grant change). */
  view: Run;
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
  constructor(
    private readonly orm: Orm,
    private readonly runs: RunService,
    private readonly grants: WriteGrantService,
    private readonly notifier: Notifier,
    private readonly gate: PolicyGate,
    private readonly clock: Clock,
    private readonly options: ControlOptions,
  ) {}

  /** Runs as this node last saw them, by id (see `applyAlone`). */
  private readonly seen = new Map<string, DecisionInput>();

  async apply(actor: UserActor, runId: string, body: ControlBody, opts: CommandOptions = {}): Promise<Run> {
    const event = ControlEvent[body.action];
    const grantTtlMs = event === ControlEvent.takeover ? this.grants.requestedTtl(body.ttlMinutes) : 0;
    let changed: Changed;
    try {
      changed = event === ControlEvent.pause || event === ControlEvent.resume
        ? await this.applyAlone(actor, runId, body, event, opts)
        : await em(this.orm).transactional((tx) => this.applyIn(tx, actor, runId, body, event, grantTtlMs, opts, true));
    } catch (err) {
      // Refused by the policy on the row the command read: nothing was written; the
      // denial's audit row (or the approval request) is written on its own, as before.
      if (err instanceof Refused) return this.gate.refuse(err.action, actor, err.ctx, err.decision, { ...body });
      throw err;
    }
    const { row, view, grants, ended } = changed;
    // Pushed as soon as the change committed: nothing is read again before the worker hears of it.
    this.push(row);
    // Committed, whichever way it was written: what this node's next pause or resume decides on.
    this.remember(row);
    for (const g of grants) this.notifier.grantUpdated(grantView(g));
    if (ended.length) await this.grants.afterEnd(ended);
    // A grant written in the transaction bumped the run's revision again (and a hand-back may
    // rotate a share after commit): those answer from a fresh read. A pause or resume answers
    // from the row the transaction wrote.
    if (grants.length || ended.length) return this.runs.publish(runId);
    this.notifier.runUpdated(view);
    return view;
  }

  /**
   * A pause or a resume writes nothing but the change and its audit row, in one statement
   * conditional on the control seq it read: no transaction is needed around the read and the
   * write (two round trips, not four). When another command moved the seq in between, it reads
   * again and decides on the new state, a few times, as the lock would have had it wait.
   *
   * First, when this node saw the run last (`seen`), it decides on that and writes with the
   * view read back in the same statement, conditional on the run being still as seen: one
   * round trip. Whatever else it finds — a run changed elsewhere, or a decision it cannot take
   * on what it saw — it reads the run and decides again, as above.
   */
  private async applyAlone(actor: UserActor, runId: string, body: ControlBody, event: ControlEvent, opts: CommandOptions): Promise<Changed> {
    const fast = await this.applyAsSeen(actor, runId, body, event, opts);
    if (fast) return fast;
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.applyIn(em(this.orm), actor, runId, body, event, 0, opts, false);
      } catch (err) {
        if (!(err instanceof SeqMoved) || attempt === ALONE_ATTEMPTS) throw err;
      }
    }
  }

  /** `applyAlone`'s one round trip, on the run as this node last saw it; undefined when that does not hold. */
  private async applyAsSeen(actor: UserActor, runId: string, body: ControlBody, event: ControlEvent, opts: CommandOptions): Promise<Changed | undefined> {
    const seen = this.seen.get(runId);
    if (!seen) return undefined;
    let decided: Decided;
    try {
      decided = this.decide(seen, actor, runId, body, event, 0, opts, 'r.id');
    } catch {
      return undefined; // decided again on the run as read: a refusal is given from the truth
    }
    const tx = em(this.orm);
    const written = await writeControlChangeAsSeen(tx, runId, seen, decided.changes, decided.audit);
    if (!written) {
      this.seen.delete(runId);
      return undefined;
    }
    const row = written.run;
    return { row, view: runView(row, written.sessions, written.grants, written.names), grants: [], ended: [] };
  }

  /**
   * The command: the run read with what its view needs (one round trip; `lock`: under the
   * command's transaction, `for update`), the policy and the transition decided on it, then
   * the change and its audit row in one statement — no audit row, no change.
   */
  private async applyIn(tx: Em, actor: UserActor, runId: string, body: ControlBody, event: ControlEvent, grantTtlMs: number, opts: CommandOptions, lock: boolean): Promise<Changed> {
    const locked = await readRunForView(tx, runId, lock);
    const { run } = locked;
    const { changes, audit, seq, correlationId, forcedFrom } = this.decide(run, actor, runId, body, event, grantTtlMs, opts, 'c.id');
    // Conditional on the seq read under the lock (see `writeControlChange`).
    const written = await writeControlChange(tx, runId, run.controlSeq, changes, event === ControlEvent.takeover, audit);
    if (!written) throw new SeqMoved();
    audit.row(written);
    const row: RunRow = Object.assign(run, changes, { revision: written.revision });
    const result: Changed = { row, view: runView(row, locked.sessions, locked.grants, locked.names), grants: [], ended: [] };
    if (event === ControlEvent.takeover) {
      const { grant } = await this.grants.grantIn(tx, actor, runId, grantTtlMs, { preferWeb: true, correlationId });
      result.grants.push(grant);
      await appendAudit(tx, { runId, actor, correlationId, action: 'handoff.initiated', metadata: { seq, controller: actor.name, grantId: grant.id, mode: changes.controlMode } }, this.clock.date());
    }
    if (event === ControlEvent.handback) result.ended = await this.endGrantsOf(tx, actor, forcedFrom?.id ?? actor.id, runId);
    return result;
  }

  /**
   * The policy and the transition, decided on `run`, and what the change writes: the run's new
   * control fields and its audit row (prepared with `runIdSql` as its run id). Throws `Refused`
   * when the policy refuses, an AppError when the run cannot take the command.
   */
  private decide(run: DecisionInput, actor: UserActor, runId: string, body: ControlBody, event: ControlEvent, grantTtlMs: number, opts: CommandOptions, runIdSql: string): Decided {
    // Handing back someone else's takeover is its own privilege (admins, by default).
    const forced = event === ControlEvent.handback && body.force === true && run.controllerId !== null && run.controllerId !== actor.id;
    if (!opts.approved) {
      const action = forced ? 'control.handback.force' : POLICY_ACTION[body.action];
      const ctx = { runId, runLabels: run.labels, ...(event === ControlEvent.takeover ? { ttlMinutes: Math.ceil(grantTtlMs / 60_000) } : {}) };
      const decision = this.gate.decide(action, actor, ctx);
      if (decision.decision !== 'allow') throw new Refused(action, ctx, decision);
    }
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
    const now = this.clock.date();
    const changes = {
      controlState: next,
      controlMode: event === ControlEvent.pause || event === ControlEvent.takeover ? (body.mode ?? 'soft') : null,
      controlSeq: seq,
      controlChangedAt: now,
      controlBy: by,
      controlCorrelationId: correlationId,
      controllerId: next === 'operator' ? actor.id : null,
      handback: event === ControlEvent.handback ? { summary: body.summary ?? '', by, at: now.toISOString(), ...(forcedFrom ? { forcedFrom } : {}) } : null,
      // The operator the agent asked for has come.
      ...(event === ControlEvent.takeover ? { needsOperatorReason: null, needsOperatorAt: null } : {}),
    } satisfies Partial<RunRow>;
    const audit = auditAppendCall({
      runId, actor, correlationId, action: `control.${body.action}`,
      metadata: { seq, from: run.controlState, to: next, mode: changes.controlMode, ...(body.summary ? { summary: body.summary } : {}), ...(forcedFrom ? { forced: true, controller: forcedFrom.name } : {}) },
    }, now, runIdSql);
    return { changes, audit, seq, correlationId, forcedFrom };
  }

  /** Keeps what a pause or a resume decides on, as this node last saw the run (see `applyAlone`). */
  private remember(run: RunRow): void {
    const { status, labels, controlState, controlSeq, controllerId, controlBy, controlCorrelationId } = run;
    this.seen.delete(run.id); // re-inserted last: the map's order is its use
    this.seen.set(run.id, { status, labels, controlState, controlSeq, controllerId, controlBy, controlCorrelationId });
    if (this.seen.size > SEEN_MAX) this.seen.delete(this.seen.keys().next().value!);
  }

  /**
   * The worker applied `seq` (`effective`: how it took hold). Audits the push → applied
   * delay; after a hand-back, also the context it captured for the agent (`handoff.completed`).
   * The common report — the run's current change, named as the push named it — is one
   * statement (`appliedCurrent`). Any other: one transaction, the run locked with its view,
   * then the advance and its audit row in one statement; dashboards get the view from memory
   * either way. The locked row is also the report's
   * verdict (no read before it): a run that is not this worker's, or lost or cancelled, is
   * returned untouched for the caller to refuse (`worker.forbidden`, `run:cancel`).
   */
  async onApplied(workerId: string, report: AppliedReport): Promise<{ refused: RunRow } | undefined> {
    if (await this.appliedCurrent(workerId, report)) return undefined;
    const { runId, seq, effective, appliedAt, handoff } = report;
    const actor = { type: 'worker' as const, id: workerId };
    const outcome = await em(this.orm).transactional(async (tx): Promise<{ refused: RunRow } | { view: Run | null }> => {
      const locked = await lockRunForView(tx, runId);
      const { run } = locked;
      if (run.workerId !== workerId || run.status === 'lost' || run.status === 'cancelled') return { refused: run };
      const current = run.controlSeq === seq;
      const correlation = current && run.controlCorrelationId ? { correlationId: run.controlCorrelationId } : {};
      // Decided on the locked row; the update below is still conditional on it.
      const advances = run.controlAppliedSeq < seq && run.controlSeq >= seq;
      const delayMs = run.controlChangedAt && current ? Math.max(0, appliedAt - run.controlChangedAt.getTime()) : null;
      const now = this.clock.date();
      const audit = auditAppendCall({ runId, actor, ...correlation, action: 'control.applied', metadata: { seq, effective, delayMs, advanced: advances } }, now, advances ? 'c.id' : '?');
      let revision = run.revision;
      if (advances) {
        const written = await advanceAppliedSeq(tx, runId, seq, audit);
        if (!written) throw new AppError({ code: ErrorCode.STATE_CONFLICT, message: `run ${runId}: control seq ${seq} changed meanwhile` });
        audit.row(written);
        revision = written.revision;
        if (delayMs !== null) metrics.controlPush.observe({ effective }, delayMs / 1000);
        if (handoff) {
          await appendAudit(tx, {
            runId, actor, ...correlation, action: 'handoff.completed',
            metadata: { seq, by: run.handback?.by.name ?? null, cwd: handoff.cwd, env: handoff.env, scrollbackSeq: handoff.scrollbackSeq, commands: handoff.commands, recording: `/api/task-runs/${runId}/recording.cast` },
          }, now);
        }
      } else {
        await runAuditAppendCall(tx, audit);
      }
      return { view: advances ? runView(Object.assign(run, { controlAppliedSeq: seq, revision }), locked.sessions, locked.grants, locked.names) : null };
    });
    if ('refused' in outcome) return outcome;
    if (outcome.view) this.notifier.runUpdated(outcome.view);
    return undefined;
  }

  /**
   * The common report, one autocommit statement: the run's current change (the one the push
   * named, echoed back), applied by its worker, without a hand-back's context. The audit row
   * is built from the echoed values, which the statement checks against the row; when they do
   * not match (a stale or unknown change, or not this worker's run) nothing is written and
   * `onApplied` decides under the run's lock. False when it did not apply.
   */
  private async appliedCurrent(workerId: string, report: AppliedReport): Promise<boolean> {
    const { runId, seq, effective, appliedAt, changedAt, correlationId } = report;
    if (report.handoff || changedAt === undefined || !correlationId) return false;
    const delayMs = Math.max(0, appliedAt - changedAt);
    const audit = auditAppendCall({ runId, actor: { type: 'worker', id: workerId }, correlationId, action: 'control.applied', metadata: { seq, effective, delayMs, advanced: true } }, this.clock.date(), 'r.id');
    const recorded = await recordAppliedIfCurrent(em(this.orm), { runId, workerId, seq, changedAt: new Date(changedAt), correlationId }, audit);
    if (!recorded) return false;
    metrics.controlPush.observe({ effective }, delayMs / 1000);
    const { run, sessions, grants, names } = recorded;
    this.notifier.runUpdated(runView(run, sessions, grants, names));
    return true;
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
      ...(run.controlChangedAt ? { changedAt: run.controlChangedAt.getTime() } : {}),
      handback: run.controlState === 'agent' ? (run.handback ?? null) : null,
    });
  }
}
