import { AppError, ErrorCode, type CreateRunBody, type ListRunsQuery, type Run, type RunList, type RunStatus } from '@handoff/shared';
import { LiveSessionSchema, RunSchema, WriteGrantSchema, type RunRow } from '../db/entities.js';
import { em, type Em, type Orm } from '../db/orm.js';
import { exitEvent, RunEvent, runStatesAllowing, runTransition } from '../domain/run-machine.js';
import { appendAudit, type Actor } from './audit.js';
import { isUser, type CommandOptions, type PolicyGate } from './policy-gate.js';
import { uuidv7 } from './ids.js';
import type { LiveSessionService } from './live-sessions.js';
import type { Notifier } from './notifier.js';
import { runView } from './views.js';

export interface RunServiceOptions {
  liveSessionDefault: boolean;
}

function notFound(id: string): AppError {
  return new AppError({ code: ErrorCode.NOT_FOUND, message: `run ${id} not found` });
}

/** The run's row, or NOT_FOUND: the one way services look a run up by id. */
export async function requireRun(tx: Em, runId: string, opts: { refresh?: boolean } = {}): Promise<RunRow> {
  const row = await tx.findOne(RunSchema, { id: runId }, opts.refresh ? { refresh: true } : {});
  if (!row) throw notFound(runId);
  return row;
}

function encodeCursor(r: RunRow): string {
  return Buffer.from(`${r.createdAt.toISOString()}|${r.id}`).toString('base64url');
}
function decodeCursor(cursor: string): { createdAt: Date; id: string } {
  const [at, id] = Buffer.from(cursor, 'base64url').toString().split('|');
  const createdAt = new Date(at ?? '');
  if (!id || Number.isNaN(createdAt.getTime())) {
    throw new AppError({ code: ErrorCode.VALIDATION, message: 'invalid cursor' });
  }
  return { createdAt, id };
}

/**
 * Applies a run event as a conditional update (`WHERE status IN <states allowing it>`),
 * so concurrent hub nodes can never double-apply. Returns the updated row, or null
 * when the run was not in a state that allows the event.
 */
export async function applyRunEvent(
  tx: Em,
  runId: string,
  event: RunEvent,
  changes: Partial<RunRow>,
  extraWhere: Record<string, unknown> = {},
): Promise<RunRow | null> {
  const from = runStatesAllowing(event);
  const row = await tx.findOne(RunSchema, { id: runId, status: { $in: from }, ...extraWhere });
  if (!row) return null;
  const next = runTransition(row.status as RunStatus, event);
  // The extra conditions (e.g. the reporting worker) hold in the UPDATE itself: a run
  // requeued and given to another worker between the read and the write is not touched.
  const updated = await tx.nativeUpdate(RunSchema, { id: runId, status: row.status, ...extraWhere }, { ...changes, status: next });
  if (updated !== 1) return null;
  Object.assign(row, changes, { status: next });
  return row;
}

export class RunService {
  /** Set after construction: the two services refer to each other. */
  sessions!: LiveSessionService;
  gate!: PolicyGate;
  /** Called after a run's exit was recorded (the hub anchors its audit chain then). */
  onExited?: (runId: string) => void;

  constructor(
    private readonly orm: Orm,
    private readonly notifier: Notifier,
    private readonly options: RunServiceOptions,
  ) {}

  async view(runId: string, tx: Em = em(this.orm)): Promise<Run> {
    const row = await requireRun(tx, runId);
    const sessions = await tx.find(LiveSessionSchema, { runId }, { orderBy: { createdAt: 'asc' } });
    const grants = await tx.find(WriteGrantSchema, { runId, status: 'active' }, { orderBy: { createdAt: 'asc' } });
    return runView(row, sessions, grants);
  }

  async publish(runId: string): Promise<Run> {
    const run = await this.view(runId);
    this.notifier.runUpdated(run);
    return run;
  }

  async create(actor: Actor, body: CreateRunBody, opts: CommandOptions = {}): Promise<Run> {
    if (isUser(actor) && !opts.approved) await this.gate.check('run.create', actor, { runLabels: body.labels ?? {} }, { body });
    const id = uuidv7();
    const title = body.title ?? ('argv' in body.command ? body.command.argv.join(' ') : body.command.script.split('\n')[0]!).slice(0, 200);
    await em(this.orm).transactional(async (tx) => {
      tx.create(RunSchema, {
        id, title, command: body.command, cwd: body.cwd ?? null, env: body.env ?? {}, labels: body.labels ?? {},
        status: 'queued', createdBy: actor.id, workerId: null, exitCode: null, errorMessage: null,
        controlState: 'agent', controlMode: null, controlSeq: 0, controlAppliedSeq: 0, controllerId: null, controlChangedAt: null, controlBy: null, controlCorrelationId: null, handback: null,
        needsOperatorReason: null, needsOperatorAt: null,
        liveSessionEnabled: body.liveSession ?? this.options.liveSessionDefault,
        createdAt: new Date(), assignedAt: null, startedAt: null, endedAt: null,
      });
      await tx.flush(); // the run row first: its session refers to it
      const liveSession = body.liveSession ?? this.options.liveSessionDefault;
      // Live viewing off: the run's session exists as DISABLED (enabling it is DISABLED → STARTING).
      const disabled = liveSession
        ? null
        : tx.create(LiveSessionSchema, {
            id: uuidv7(), runId: id, provider: 'web', status: 'DISABLED', workerId: null, correlationId: uuidv7(), createdBy: actor.id,
            createdAt: new Date(), readyAt: null, endedAt: null, expiresAt: new Date(), graceWarnedAt: null, lastHeartbeatAt: null,
            endReason: null, errorMessage: null, attachRo: null, attachRwEnc: null,
          });
      await tx.flush();
      // Env values are not recorded: only their names.
      await appendAudit(tx, { runId: id, actor, correlationId: opts.correlationId, action: 'run.create', metadata: { title, envNames: Object.keys(body.env ?? {}), liveSession } });
      if (disabled) await appendAudit(tx, { runId: id, sessionId: disabled.id, correlationId: disabled.correlationId, actor, action: 'session.disabled', metadata: { provider: 'web' } });
    });
    const run = await this.publish(id);
    this.notifier.kickSchedulers();
    return run;
  }

  async list(query: ListRunsQuery): Promise<RunList> {
    const tx = em(this.orm);
    const where: Record<string, unknown> = {};
    if (query.status) where.status = query.status;
    if (query.cursor) {
      const c = decodeCursor(query.cursor);
      where.$or = [{ createdAt: { $lt: c.createdAt } }, { createdAt: c.createdAt, id: { $lt: c.id } }];
    }
    const rows = await tx.find(RunSchema, where, { orderBy: [{ createdAt: 'desc' }, { id: 'desc' }], limit: query.limit + 1 });
    const page = rows.slice(0, query.limit);
    const ids = page.map((r) => r.id);
    const sessions = page.length ? await tx.find(LiveSessionSchema, { runId: { $in: ids } }, { orderBy: { createdAt: 'asc' } }) : [];
    const grants = page.length ? await tx.find(WriteGrantSchema, { runId: { $in: ids }, status: 'active' }, { orderBy: { createdAt: 'asc' } }) : [];
    return {
      runs: page.map((r) => runView(r, sessions.filter((s) => s.runId === r.id), grants.filter((g) => g.runId === r.id))),
      nextCursor: rows.length > query.limit && page.length ? encodeCursor(page[page.length - 1]!) : null,
    };
  }

  async cancel(actor: Actor, runId: string, reason?: string, opts: CommandOptions = {}): Promise<Run> {
    if (isUser(actor) && !opts.approved) {
      const run = await requireRun(em(this.orm), runId);
      await this.gate.check('run.cancel', actor, { runId, runLabels: run.labels }, { reason: reason ?? null });
    }
    const row = await em(this.orm).transactional(async (tx) => {
      const current = await requireRun(tx, runId);
      runTransition(current.status as RunStatus, RunEvent.cancel); // STATE_CONFLICT for finished runs
      const updated = await applyRunEvent(tx, runId, RunEvent.cancel, { endedAt: new Date(), errorMessage: reason ? `cancelled: ${reason}` : 'cancelled' });
      if (!updated) throw new AppError({ code: ErrorCode.STATE_CONFLICT, message: `run ${runId} changed state meanwhile; retry` });
      await appendAudit(tx, { runId, actor, correlationId: opts.correlationId, action: 'run.cancel', metadata: { from: current.status, reason: reason ?? null } });
      return updated;
    });
    if (row.workerId) this.notifier.cancelOnWorker(row.workerId, runId);
    await this.sessions.endAllForRun(runId, 'run-cancelled');
    return this.publish(runId);
  }

  /** The worker started the run's process. Only the assigned worker may report. */
  async reportStarted(workerId: string, runId: string): Promise<void> {
    await this.assertOwned(workerId, runId, 'run:started');
    const started = await em(this.orm).transactional(async (tx) => {
      const row = await applyRunEvent(tx, runId, RunEvent.start, { startedAt: new Date() }, { workerId });
      if (row) await appendAudit(tx, { runId, actor: { type: 'worker', id: workerId }, action: 'run.start' });
      return row;
    });
    if (started) {
      await this.sessions.onRunStarted(started);
      await this.publish(runId);
    }
  }

  /** The run's process exited (or never started). Idempotent: a repeated report changes nothing. */
  async reportExited(workerId: string, runId: string, exitCode: number | null, error?: string): Promise<void> {
    await this.assertOwned(workerId, runId, 'run:exited');
    const tx = em(this.orm);
    const ended = await tx.transactional(async (t) => {
      const row = await applyRunEvent(t, runId, exitEvent(exitCode), { exitCode, endedAt: new Date(), errorMessage: error ?? null }, { workerId });
      if (row) {
        await appendAudit(t, { runId, actor: { type: 'worker', id: workerId }, action: 'run.exit', metadata: { exitCode, error: error ?? null } });
        return row;
      }
      // A cancelled run still gets its real exit code recorded.
      await t.nativeUpdate(RunSchema, { id: runId, status: 'cancelled', exitCode: null }, { exitCode });
      return null;
    });
    await this.sessions.endAllForRun(runId, ended ? 'run-ended' : 'run-cancelled');
    await this.publish(runId);
    this.notifier.kickSchedulers();
    this.onExited?.(runId);
  }

  /** The agent asked for a human: flag the run, push it to dashboards at once, audit it. */
  async needsOperator(workerId: string, runId: string, reason: string): Promise<void> {
    await this.assertOwned(workerId, runId, 'run:needs-operator');
    const at = new Date();
    await em(this.orm).transactional(async (tx) => {
      await tx.nativeUpdate(RunSchema, { id: runId }, { needsOperatorReason: reason, needsOperatorAt: at });
      await appendAudit(tx, { runId, actor: { type: 'agent', id: runId }, action: 'run.needs-operator', metadata: { reason } });
    });
    this.notifier.needsOperator(runId, reason, at.toISOString());
    await this.publish(runId);
  }

  /** An operator saw the request: clear the flag. */
  async dismissNeedsOperator(actor: Actor, runId: string, opts: CommandOptions = {}): Promise<Run> {
    if (isUser(actor) && !opts.approved) {
      const run = await requireRun(em(this.orm), runId);
      await this.gate.check('needs-operator.dismiss', actor, { runId, runLabels: run.labels });
    }
    await em(this.orm).transactional(async (tx) => {
      const run = await requireRun(tx, runId);
      if (!run.needsOperatorAt) throw new AppError({ code: ErrorCode.STATE_CONFLICT, message: `run ${runId} has not asked for an operator` });
      await tx.nativeUpdate(RunSchema, { id: runId }, { needsOperatorReason: null, needsOperatorAt: null });
      await appendAudit(tx, { runId, actor, correlationId: opts.correlationId, action: 'run.needs-operator.dismiss', metadata: { reason: run.needsOperatorReason } });
    });
    return this.publish(runId);
  }

  /**
   * A (re)connecting worker lists the runs it still has. Runs the hub thinks it has but
   * it no longer does (it crashed and restarted) are lost.
   */
  async reconcileWorker(workerId: string, stillRunning: string[]): Promise<string[]> {
    const tx = em(this.orm);
    // (Runs it still has that the hub gave up on are stopped by adoptionVerdicts.)
    const mine = await tx.find(RunSchema, { workerId, status: { $in: ['assigned', 'running'] } });
    const lost: string[] = [];
    for (const run of mine.filter((r) => !stillRunning.includes(r.id))) {
      const row = await tx.transactional(async (t) => {
        const updated = await applyRunEvent(t, run.id, RunEvent.lose, { endedAt: new Date(), errorMessage: 'worker restarted without this run' }, { workerId });
        if (updated) await appendAudit(t, { runId: run.id, actor: { type: 'worker', id: workerId }, action: 'run.lost', metadata: { reason: 'worker-restarted' } });
        return updated;
      });
      if (row) {
        lost.push(run.id);
        await this.sessions.endAllForRun(run.id, 'run-lost', 'ERROR');
        await this.publish(run.id);
      }
    }
    return lost;
  }

  /**
   * For each run a (re)connecting worker still has: keep it (the hub still has it as this
   * worker's and active; `lastSeq` is the highest recorded frame, so the worker resends
   * what follows) or stop it (the hub gave up on it, or it is another worker's). Call it
   * once this node's unrecorded frames of those runs are written.
   */
  async adoptionVerdicts(workerId: string, runIds: string[]): Promise<Array<{ runId: string; keep: boolean; lastSeq: number }>> {
    if (!runIds.length) return [];
    const tx = em(this.orm);
    const rows = await tx.find(RunSchema, { id: { $in: runIds } });
    const seqs = await tx.execute<{ run_id: string; last: number | null }[]>(
      `select r.id as run_id, (select max(seq) from recording_chunks c where c.run_id = r.id) as last from runs r where r.id in (${runIds.map(() => '?').join(', ')})`,
      runIds,
    );
    const lastSeq = new Map(seqs.map((s) => [s.run_id, Number(s.last ?? 0)]));
    return runIds.map((runId) => {
      const row = rows.find((r) => r.id === runId);
      const keep = !!row && row.workerId === workerId && (row.status === 'assigned' || row.status === 'running');
      if (!keep) this.notifier.cancelOnWorker(workerId, runId);
      return { runId, keep, lastSeq: lastSeq.get(runId) ?? 0 };
    });
  }

  /**
   * A worker the hub had declared lost was heard again within WORKER_RECLAIM_GRACE: the
   * runs it still has (all of them on a socket that never dropped, or those its hello
   * listed) are kept (`run.reclaimed`), and a running one that should be watchable gets
   * its web share back (its old one went ERROR with the worker).
   */
  async reclaim(workerId: string, via: 'hello' | 'heartbeat', listed?: string[]): Promise<string[]> {
    const tx = em(this.orm);
    const mine = await tx.find(RunSchema, { workerId, status: { $in: ['assigned', 'running'] } });
    const kept = listed ? mine.filter((r) => listed.includes(r.id)) : mine;
    for (const run of kept) {
      await tx.transactional((t) => appendAudit(t, { runId: run.id, actor: { type: 'worker', id: workerId }, action: 'run.reclaimed', metadata: { via } }));
      if (run.status === 'running') await this.sessions.onRunStarted(run);
      await this.publish(run.id);
    }
    if (!listed) {
      // A socket that never dropped lists nothing: whatever of its runs the hub gave up on
      // lately is stopped again, in case the push made while it was frozen did not get through.
      const given = await tx.execute<{ id: string }[]>(
        `select id from runs where worker_id = ? and status = 'lost' and ended_at > now() - interval '1 hour'`,
        [workerId],
      );
      for (const { id } of given) this.notifier.cancelOnWorker(workerId, id);
    }
    return kept.map((r) => r.id);
  }

  /**
   * May this worker report for this run? `forbidden`: the run is not (any more) its own
   * (another worker's, requeued, never assigned); `over`: it is, but the hub gave it up
   * (lost or cancelled) and the worker must stop it.
   */
  async reportVerdict(workerId: string, runId: string): Promise<{ verdict: 'ok' | 'forbidden' | 'over'; run: RunRow }> {
    const run = await requireRun(em(this.orm), runId);
    if (run.workerId !== workerId) return { verdict: 'forbidden', run };
    if (run.status === 'lost' || run.status === 'cancelled') return { verdict: 'over', run };
    return { verdict: 'ok', run };
  }

  /** Audits a refused worker report (`worker.forbidden`, denied) on the targeted run's chain. */
  async auditRefusedReport(workerId: string, run: RunRow, what: string): Promise<void> {
    await em(this.orm).transactional((tx) =>
      appendAudit(tx, { runId: run.id, actor: { type: 'worker', id: workerId }, action: 'worker.forbidden', result: 'denied', metadata: { attempted: what, assignedTo: run.workerId ?? null, status: run.status } }),
    );
  }

  /**
   * FORBIDDEN unless `runId` is assigned to `workerId` (a worker acts only for its own
   * runs); every refused attempt is audited on the targeted run's chain.
   */
  async assertOwned(workerId: string, runId: string, what = 'report'): Promise<RunRow> {
    const row = await requireRun(em(this.orm), runId);
    if (row.workerId !== workerId) {
      await em(this.orm).transactional((tx) =>
        appendAudit(tx, { runId, actor: { type: 'worker', id: workerId }, action: 'worker.forbidden', result: 'denied', metadata: { attempted: what, assignedTo: row.workerId ?? null } }),
      );
      throw new AppError({ code: ErrorCode.FORBIDDEN, message: `run ${runId} is not assigned to this worker` });
    }
    return row;
  }
}
