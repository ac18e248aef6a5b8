import { AppError, ErrorCode, type Clock, type CreateRunBody, type PaneInfo, type ListRunsQuery, type Run, type RunList, type RunStatus } from '@handoff/shared';
import { LiveSessionSchema, RunSchema, UserSchema, WorkerSchema, WriteGrantSchema, type RunRow } from '../infra/db/entities.js';
import { em, type Em, type Orm } from '../infra/db/orm.js';
import { exitEvent, RunEvent, runTransition } from '../domain/run-machine.js';
import { appendAudit, auditAppendCall, type Actor } from '../audit/audit-append.js';
import { isUser, type CommandOptions, type PolicyGate } from '../policy/policy-gate.js';
import { uuidv7 } from '../infra/ids.js';
import type { HubEvents } from '../hooks/hub-events.js';
import type { Notifier } from '../hooks/notifier.js';
import { applyRunEvent, assertRunOwned, encodeCursor, insertRun, lastRecordedSeqs, listRunIds, markStarted, readRunForView, type NewRun, type RunForView, recentlyLostRunIds, requireRun } from './run-queries.js';
import { runView, type RunNames } from '../views.js';

export interface RunServiceOptions {
  liveSessionDefault: boolean;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The names of the runs' creators and workers: two primary-key lookups, whatever the page size. */
async function namesOf(tx: Em, rows: RunRow[]): Promise<RunNames> {
  // createdBy is free text in the schema (a user id in practice): only a uuid can name a user,
  // and anything else in an `id in (…)` on a uuid column would fail the whole page.
  const userIds = [...new Set(rows.map((r) => r.createdBy).filter((id) => UUID.test(id)))];
  const workerIds = [...new Set(rows.flatMap((r) => (r.workerId ? [r.workerId] : [])))];
  const users = userIds.length ? await tx.find(UserSchema, { id: { $in: userIds } }, { fields: ['id', 'name'] }) : [];
  const workers = workerIds.length ? await tx.find(WorkerSchema, { id: { $in: workerIds } }, { fields: ['id', 'name'] }) : [];
  return { users: new Map(users.map((u) => [u.id, u.name])), workers: new Map(workers.map((w) => [w.id, w.name])) };
}

export class RunService {
  constructor(
    private readonly orm: Orm,
    private readonly notifier: Notifier,
    private readonly gate: PolicyGate,
    /** Announces run.started / run.ended / run.exited: live sessions and the audit anchor react. */
    private readonly events: HubEvents,
    private readonly clock: Clock,
    private readonly options: RunServiceOptions,
  ) {}

  async view(runId: string, tx: Em = em(this.orm)): Promise<Run> {
    const { run, sessions, grants, names } = await readRunForView(tx, runId);
    return runView(run, sessions, grants, names);
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
    const liveSession = body.liveSession ?? this.options.liveSessionDefault;
    const run: NewRun = {
      id, title, command: body.command, cwd: body.cwd ?? null, env: body.env ?? {}, labels: body.labels ?? {},
      createdBy: actor.id, liveSessionEnabled: liveSession, createdAt: this.clock.date(),
    };
    // Env values are not recorded: only their names.
    const audit = auditAppendCall({ runId: id, actor, correlationId: opts.correlationId, action: 'run.create', metadata: { title, envNames: Object.keys(body.env ?? {}), liveSession } }, this.clock.date(), 'c.id');
    if (liveSession) {
      // The run and its audit row: one statement on the first frame's path.
      await insertRun(em(this.orm), run, audit);
    } else {
      // Live viewing off: the run's session exists as DISABLED (enabling it is DISABLED → STARTING), in the run's transaction.
      await em(this.orm).transactional(async (tx) => {
        await insertRun(tx, run, audit);
        const disabled = tx.create(LiveSessionSchema, {
          id: uuidv7(), runId: id, provider: 'web', status: 'DISABLED', workerId: null, correlationId: uuidv7(), createdBy: actor.id,
          createdAt: this.clock.date(), readyAt: null, endedAt: null, expiresAt: this.clock.date(), graceWarnedAt: null, lastHeartbeatAt: null,
          endReason: null, errorMessage: null, attachRo: null, attachRwEnc: null,
        });
        await tx.flush();
        await appendAudit(tx, { runId: id, sessionId: disabled.id, correlationId: disabled.correlationId, actor, action: 'session.disabled', metadata: { provider: 'web' } }, this.clock.date());
      });
    }
    // Offered to a worker at once (the claim runs beside the publish): the first frame waits on it.
    this.notifier.kickSchedulers(id);
    return this.publish(id);
  }

  async list(query: ListRunsQuery): Promise<RunList> {
    const tx = em(this.orm);
    const ids = await listRunIds(tx, query);
    const pageIds = ids.slice(0, query.limit);
    const byId = new Map((pageIds.length ? await tx.find(RunSchema, { id: { $in: pageIds } }) : []).map((r) => [r.id, r]));
    const page = pageIds.flatMap((id) => byId.get(id) ?? []);
    const sessions = page.length ? await tx.find(LiveSessionSchema, { runId: { $in: pageIds } }, { orderBy: { createdAt: 'asc' } }) : [];
    const grants = page.length ? await tx.find(WriteGrantSchema, { runId: { $in: pageIds }, status: 'active' }, { orderBy: { createdAt: 'asc' } }) : [];
    const names = await namesOf(tx, page);
    return {
      runs: page.map((r) => runView(r, sessions.filter((s) => s.runId === r.id), grants.filter((g) => g.runId === r.id), names)),
      nextCursor: ids.length > query.limit && page.length ? encodeCursor(page[page.length - 1]!) : null,
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
      const updated = await applyRunEvent(tx, runId, RunEvent.cancel, { endedAt: this.clock.date(), errorMessage: reason ? `cancelled: ${reason}` : 'cancelled' });
      if (!updated) throw new AppError({ code: ErrorCode.STATE_CONFLICT, message: `run ${runId} changed state meanwhile; retry` });
      await appendAudit(tx, { runId, actor, correlationId: opts.correlationId, action: 'run.cancel', metadata: { from: current.status, reason: reason ?? null } }, this.clock.date());
      return updated;
    });
    if (row.workerId) this.notifier.cancelOnWorker(row.workerId, runId);
    await this.events.emit('run.ended', { runId, reason: 'run-cancelled' });
    return this.publish(runId);
  }

  /**
   * The worker started the run's process: the run is running once this resolves with its row
   * and what its view needs, as written (null: it was not assigned to this worker, or already
   * past assigned). Dashboards are not told yet: the caller adds the run's web share first. The pane it
   * reports (size, TERM) is recorded with the start: the recording's header is built from it.
   * `sinceMs` (the worker's frame clock at sending) dates the start at the frames' origin, so
   * the timeline links audit rows to the frame on screen at their time.
   */
  async reportStarted(workerId: string, runId: string, pane?: PaneInfo, sinceMs = 0): Promise<RunForView | null> {
    // Only the assigned worker's report moves the run, with its audit row: one statement on the first frame's path.
    const audit = auditAppendCall({ runId, actor: { type: 'worker', id: workerId }, action: 'run.start', ...(pane ? { metadata: { pane } } : {}) }, this.clock.date(), 'r.id');
    return markStarted(em(this.orm), runId, workerId, new Date(this.clock.now() - sinceMs), audit);
  }

  /** A run's row and sessions, as a repeated start report needs them (see `run:started`). */
  startedView(runId: string): Promise<RunForView> {
    return readRunForView(em(this.orm), runId);
  }

  /**
   * After `reportStarted` moved the run: its reactions (the shares asked for before it started, a
   * configured tmate/upterm share), then the dashboards' update with them. `repeat`: the worker
   * reported the start again — only what the run never had is started.
   */
  async announceStarted(started: RunRow, { repeat = false }: { repeat?: boolean } = {}): Promise<void> {
    await this.events.emit('run.started', { run: started, repeat });
    await this.publish(started.id);
  }

  /** The run's process exited (or never started). Idempotent: a repeated report changes nothing. */
  async reportExited(workerId: string, runId: string, exitCode: number | null, error?: string): Promise<void> {
    await this.assertOwned(workerId, runId, 'run:exited');
    const tx = em(this.orm);
    // The exit row is dated with the end: the timeline shows the run's last frame from then on.
    const at = this.clock.date();
    const ended = await tx.transactional(async (t) => {
      const row = await applyRunEvent(t, runId, exitEvent(exitCode), { exitCode, endedAt: at, errorMessage: error ?? null }, { workerId });
      if (row) {
        await appendAudit(t, { runId, actor: { type: 'worker', id: workerId }, action: 'run.exit', metadata: { exitCode, error: error ?? null } }, at);
        return row;
      }
      // A cancelled run still gets its real exit code recorded.
      await t.nativeUpdate(RunSchema, { id: runId, status: 'cancelled', exitCode: null }, { exitCode });
      return null;
    });
    await this.events.emit('run.ended', { runId, reason: ended ? 'run-ended' : 'run-cancelled' });
    await this.publish(runId);
    this.notifier.kickSchedulers();
    await this.events.emit('run.exited', { runId });
  }

  /** The agent asked for a human: flag the run, push it to dashboards at once, audit it. */
  async needsOperator(workerId: string, runId: string, reason: string): Promise<void> {
    await this.assertOwned(workerId, runId, 'run:needs-operator');
    const at = this.clock.date();
    const raised = await em(this.orm).transactional(async (tx) => {
      // The worker resends what the hub did not ack (a hub node died after the commit): the
      // same request while it is still pending changes nothing — one audit row, one webhook.
      const n = await tx.nativeUpdate(RunSchema, { id: runId, $or: [{ needsOperatorAt: null }, { needsOperatorReason: { $ne: reason } }] }, { needsOperatorReason: reason, needsOperatorAt: at });
      if (n !== 1) return false;
      await appendAudit(tx, { runId, actor: { type: 'agent', id: runId }, action: 'run.needs-operator', metadata: { reason } }, this.clock.date());
      return true;
    });
    if (!raised) return;
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
      await appendAudit(tx, { runId, actor, correlationId: opts.correlationId, action: 'run.needs-operator.dismiss', metadata: { reason: run.needsOperatorReason } }, this.clock.date());
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
        const updated = await applyRunEvent(t, run.id, RunEvent.lose, { endedAt: this.clock.date(), errorMessage: 'worker restarted without this run' }, { workerId });
        if (updated) await appendAudit(t, { runId: run.id, actor: { type: 'worker', id: workerId }, action: 'run.lost', metadata: { reason: 'worker-restarted' } }, this.clock.date());
        return updated;
      });
      if (row) {
        lost.push(run.id);
        await this.events.emit('run.ended', { runId: run.id, reason: 'run-lost', code: 'ERROR' });
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
    const lastSeq = await lastRecordedSeqs(tx, runIds);
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
      await appendAudit(tx, { runId: run.id, actor: { type: 'worker', id: workerId }, action: 'run.reclaimed', metadata: { via } }, this.clock.date());
      if (run.status === 'running') await this.events.emit('run.started', { run });
      await this.publish(run.id);
    }
    if (!listed) {
      // A socket that never dropped lists nothing: whatever of its runs the hub gave up on
      // lately (the last hour, on the clock that dated their end) is stopped again, in case the
      // push made while it was frozen did not get through.
      for (const id of await recentlyLostRunIds(tx, workerId, new Date(this.clock.now() - 3_600_000))) this.notifier.cancelOnWorker(workerId, id);
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
    await appendAudit(em(this.orm), { runId: run.id, actor: { type: 'worker', id: workerId }, action: 'worker.forbidden', result: 'denied', metadata: { attempted: what, assignedTo: run.workerId ?? null, status: run.status } }, this.clock.date());
  }

  /** FORBIDDEN unless the run is this worker's (see assertRunOwned). */
  assertOwned(workerId: string, runId: string, what = 'report'): Promise<RunRow> {
    return assertRunOwned(em(this.orm), workerId, runId, what, this.clock.date());
  }

}
