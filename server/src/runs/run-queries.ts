import { AppError, ErrorCode, type ListRunsQuery, type RunStatus } from '@handoff/shared';
import { LiveSessionSchema, RunSchema, WriteGrantSchema, type LiveSessionRow, type RunRow, type WriteGrantRow } from '../infra/db/entities.js';
import { rowOf, type Em } from '../infra/db/orm.js';
import { RunEvent, runStatesAllowing, runTransition } from '../domain/run-machine.js';
import { appendAudit, type AuditAppendCall, type Chained } from '../audit/audit-append.js';
import type { RunNames } from '../views.js';

// The run queries every feature shares (runs, sessions, grants, control, messages, the
// scheduler): kept out of the run service so none of them depends on it for a lookup. Below
// them, the run service's own SQL: the runs list page, adoption and reclaim lookups.

function notFound(id: string): AppError {
  return new AppError({ code: ErrorCode.NOT_FOUND, message: `run ${id} not found` });
}

/** The run's row, or NOT_FOUND: the one way services look a run up by id. */
export async function requireRun(tx: Em, runId: string, opts: { refresh?: boolean } = {}): Promise<RunRow> {
  const row = await tx.findOne(RunSchema, { id: runId }, opts.refresh ? { refresh: true } : {});
  if (!row) throw notFound(runId);
  return row;
}

/** What a run's view is built from, read in one round trip. */
export interface RunForView {
  run: RunRow;
  sessions: LiveSessionRow[];
  grants: WriteGrantRow[];
  names: RunNames;
}

/**
 * Locks the run (`for update`) and reads what its view needs — its sessions and live grants —
 * in the same round trip, so a command can decide on the row, change it and answer without
 * reading it again. NOT_FOUND when there is no such run.
 */
export function lockRunForView(tx: Em, runId: string): Promise<RunForView> {
  return readRunForView(tx, runId, true);
}

/**
 * The run, its sessions and live grants and the names its view shows, in one round trip
 * (`lock`: `for update` of the run's row). Every publish reads this: it used to be five.
 * NOT_FOUND when there is no such run.
 */
export async function readRunForView(tx: Em, runId: string, lock = false): Promise<RunForView> {
  const [raw] = await tx.execute<RawRunForView[]>(`select ${RUN_VIEW_COLUMNS} from runs r where r.id = ?${lock ? ' for update of r' : ''}`, [runId]);
  if (!raw) throw notFound(runId);
  return mapRunForView(tx, raw);
}

/**
 * The select list of a run's view, over a run row named `r` (a table or a statement's
 * `returning *`): the row, and in `view_extras` its sessions and live grants, its creator's and
 * worker's names (`run_view_extras`, migration 0020, whose plans the connection keeps).
 * `mapRunForView` reads a result row of it.
 */
export const RUN_VIEW_COLUMNS = `r.*, run_view_extras(r.id, r.created_by, r.worker_id) as view_extras`;

/** What `run_view_extras` returns. */
interface RunViewExtras {
  sessions: object[];
  grants: object[];
  creator: string | null;
  worker: string | null;
}

/** A result row of `RUN_VIEW_COLUMNS` (a caller whose statement selects more takes its own columns out before mapping). */
export type RawRunForView = Record<string, unknown> & { view_extras: RunViewExtras };

/** What a view needs from a `RUN_VIEW_COLUMNS` row. */
export function mapRunForView(tx: Em, raw: RawRunForView): RunForView {
  const { view_extras: extras, ...row } = raw;
  const { sessions, grants, creator, worker } = extras;
  const run = rowOf(tx, RunSchema, row);
  const names: RunNames = {
    users: new Map(creator ? [[run.createdBy, creator]] : []),
    workers: new Map(worker && run.workerId ? [[run.workerId, worker]] : []),
  };
  return {
    names,
    run,
    sessions: sessions.map((s) => rowOf(tx, LiveSessionSchema, s as Record<string, unknown>)),
    grants: grants.map((g) => rowOf(tx, WriteGrantSchema, g as Record<string, unknown>)),
  };
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
  // A copy: the managed entity stays as read. Changing it would make the transaction's flush
  // write the same UPDATE a second time (bumping the revision twice), and would change under
  // the caller's feet a row it read before (the identity map hands out one object per id).
  return { ...row, ...changes, status: next };
}

/**
 * FORBIDDEN unless `runId` is assigned to `workerId` (a worker acts only for its own
 * runs); every refused attempt is audited on the targeted run's chain (dated `at`).
 */
export async function assertRunOwned(tx: Em, workerId: string, runId: string, what: string, at: Date): Promise<RunRow> {
  const row = await requireRun(tx, runId);
  if (row.workerId !== workerId) {
    await appendAudit(tx, { runId, actor: { type: 'worker', id: workerId }, action: 'worker.forbidden', result: 'denied', metadata: { attempted: what, assignedTo: row.workerId ?? null } }, at);
    throw new AppError({ code: ErrorCode.FORBIDDEN, message: `run ${runId} is not assigned to this worker` });
  }
  return row;
}

// ── the run service's own ─────────────────────────────────────────────────────

/** The list cursor after run `r` (opaque to clients; `decodeCursor` reads it). */
export function encodeCursor(r: RunRow): string {
  return Buffer.from(`${r.createdAt.toISOString()}|${r.id}`).toString('base64url');
}

/** The list position a cursor names; VALIDATION when it names none. */
function decodeCursor(cursor: string): { createdAt: Date; id: string } {
  const [at, id] = Buffer.from(cursor, 'base64url').toString().split('|');
  const createdAt = new Date(at ?? '');
  if (!id || Number.isNaN(createdAt.getTime())) {
    throw new AppError({ code: ErrorCode.VALIDATION, message: 'invalid cursor' });
  }
  return { createdAt, id };
}

/** `%`, `_` and the escape character itself match literally in a LIKE pattern. */
function likeContaining(text: string): string {
  return `%${text.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
}

/**
 * The ids of one page of `GET /api/task-runs` (limit + 1, to know whether a next page exists),
 * newest first. Every filter is a bound parameter. The walk follows runs_created_idx (or
 * runs_status_created_idx for a status filter, runs_needs_operator_idx for needs-operator) and
 * stops after limit + 1 matches; the text search is a filter on that walk, not an index of its
 * own — it is typed by a person, not polled.
 */
export function listRunsSql(query: ListRunsQuery): { sql: string; params: unknown[] } {
  const where: string[] = [];
  const params: unknown[] = [];
  const list = (values: readonly string[]) => {
    params.push(...values);
    return values.map(() => '?').join(', ');
  };
  if (query.status) where.push(`r.status in (${list(query.status)})`);
  if (query.control) where.push(`r.control_state in (${list(query.control)})`);
  if (query.needsOperator !== undefined) where.push(`r.needs_operator_at is ${query.needsOperator ? 'not ' : ''}null`);
  if (query.share) {
    const provider = query.share === 'any' || query.share === 'none' ? '' : ' and s.provider = ?';
    if (provider) params.push(query.share);
    // live_sessions_one_active_idx (run_id, provider) where status in (STARTING, READY) serves it.
    where.push(`${query.share === 'none' ? 'not ' : ''}exists (select 1 from live_sessions s where s.run_id = r.id and s.status = 'READY'${provider})`);
  }
  const text = query.q?.trim();
  if (text) {
    const like = likeContaining(text);
    where.push(`(r.title ilike ? escape '\\'
      or exists (select 1 from jsonb_each_text(r.labels) l where l.key ilike ? escape '\\' or l.value ilike ? escape '\\' or (l.key || ':' || l.value) ilike ? escape '\\')
      or r.created_by in (select u.id::text from users u where u.name ilike ? escape '\\')
      or r.worker_id in (select w.id from workers w where w.name ilike ? escape '\\')
      or r.id::text like ? escape '\\')`);
    params.push(like, like, like, like, like, like, `${like.slice(1, -1).toLowerCase()}%`);
  }
  if (query.cursor) {
    const c = decodeCursor(query.cursor);
    where.push('(r.created_at < ? or (r.created_at = ? and r.id < ?))');
    params.push(c.createdAt, c.createdAt, c.id);
  }
  params.push(query.limit + 1);
  const sql = `select r.id from runs r${where.length ? ` where ${where.join(' and ')}` : ''} order by r.created_at desc, r.id desc limit ?`;
  return { sql, params };
}

/** The ids of one page of the runs list (`listRunsSql`): limit + 1 of them when a next page exists. */
export async function listRunIds(tx: Em, query: ListRunsQuery): Promise<string[]> {
  const { sql, params } = listRunsSql(query);
  return (await tx.execute<{ id: string }[]>(sql, params)).map((r) => r.id);
}

/** By run id: the highest recorded frame seq of each of the runs that exist (0 when nothing is recorded). */
export async function lastRecordedSeqs(tx: Em, runIds: string[]): Promise<Map<string, number>> {
  const seqs = await tx.execute<{ run_id: string; last: number | null }[]>(
    `select r.id as run_id, (select max(seq) from recording_chunks c where c.run_id = r.id) as last from runs r where r.id in (${runIds.map(() => '?').join(', ')})`,
    runIds,
  );
  return new Map(seqs.map((s) => [s.run_id, Number(s.last ?? 0)]));
}

/** What a new run is created with; everything else starts empty (queued, control with the agent). */
export interface NewRun {
  id: string;
  title: string;
  command: RunRow['command'];
  cwd: string | null;
  env: Record<string, string>;
  labels: Record<string, string>;
  createdBy: string;
  liveSessionEnabled: boolean;
  createdAt: Date;
}

/**
 * Inserts a queued run with its `run.create` audit row (`audit`, prepared with `c.id` as its run
 * id) in one statement: autocommit on its own, or inside the caller's transaction when other
 * rows must go with it.
 */
export async function insertRun(tx: Em, run: NewRun, audit: AuditAppendCall): Promise<void> {
  const [chained] = await tx.execute<Array<Chained>>(
    `with c as (
       insert into runs (id, title, command, cwd, env, labels, status, created_by, worker_id, exit_code, error_message,
                         control_state, control_mode, control_seq, control_applied_seq, controller_id, control_changed_at, control_by,
                         control_correlation_id, handback, needs_operator_reason, needs_operator_at, live_session_enabled,
                         created_at, assigned_at, started_at, ended_at)
       values (?, ?, ?::jsonb, ?, ?::jsonb, ?::jsonb, 'queued', ?, null, null, null,
               'agent', null, 0, 0, null, null, null,
               null, null, null, null, ?,
               ?, null, null, null)
       returning id
     )
     select a.chain_seq, a.chain_prev_hash, a.chain_hash from c cross join lateral ${audit.sql} a`,
    [run.id, run.title, JSON.stringify(run.command), run.cwd, JSON.stringify(run.env), JSON.stringify(run.labels), run.createdBy, run.liveSessionEnabled, run.createdAt, ...audit.params],
  );
  audit.row(chained!);
}

/**
 * The run's worker started it: `assigned` → `running` (started at `startedAt`) with its audit
 * row (`audit`, prepared with `r.id` as its run id), and the run's view as written, in one
 * autocommit statement — only when the run is still this worker's and assigned. Null when it
 * was not (nothing written): a repeated report, or a run no longer the worker's.
 */
export async function markStarted(tx: Em, runId: string, workerId: string, startedAt: Date, audit: AuditAppendCall): Promise<RunForView | null> {
  const from = runStatesAllowing(RunEvent.start);
  const [raw] = await tx.execute<Array<RawRunForView & Chained>>(
    `with c as (
       update runs set status = ?, started_at = ? where id = ? and worker_id = ? and status in (${from.map(() => '?').join(', ')}) returning *
     )
     select ${RUN_VIEW_COLUMNS}, a.chain_seq, a.chain_prev_hash, a.chain_hash from c r cross join lateral ${audit.sql} a`,
    [runTransition(from[0]!, RunEvent.start), startedAt, runId, workerId, ...from, ...audit.params],
  );
  return raw ? mapRunForView(tx, audit.take(raw) as RawRunForView) : null;
}

/** The worker's runs the hub declared lost within the last hour. */
export async function recentlyLostRunIds(tx: Em, workerId: string, endedAfter: Date): Promise<string[]> {
  const given = await tx.execute<{ id: string }[]>(
    `select id from runs where worker_id = ? and status = 'lost' and ended_at > ?`,
    [workerId, endedAfter],
  );
  return given.map((r) => r.id);
}
