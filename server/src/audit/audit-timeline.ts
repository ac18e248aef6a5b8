import { paneInfoSchema, type AuditEvent, type PaneInfo } from '@handoff/shared';
import type { Em } from '../infra/db/orm.js';

// What the dashboard's timeline needs beside the rows themselves, computed when a page is
// read (never stored in the rows: that would change what the hash chain covers).

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * Display names of the page's actors, by actor id: users and workers by their name, the
 * agent and the hub by what they are. Two primary-key lookups per page, whatever its size.
 */
export async function actorNames(tx: Em, events: AuditEvent[]): Promise<Record<string, string>> {
  const names: Record<string, string> = {};
  const ids = (type: string) => [...new Set(events.filter((e) => e.actorType === type && UUID.test(e.actorId)).map((e) => e.actorId))];
  const lookup = async (table: 'users' | 'workers', wanted: string[]) => {
    if (!wanted.length) return;
    const rows = await tx.execute<{ id: string; name: string }[]>(
      `select id::text as id, name from ${table} where id in (select j::uuid from json_array_elements_text(?::json) as j)`,
      [JSON.stringify(wanted)],
    );
    for (const r of rows) names[r.id] = r.name;
  };
  await lookup('users', ids('operator'));
  await lookup('workers', ids('worker'));
  for (const e of events) {
    if (e.actorType === 'agent') names[e.actorId] = 'agent';
    else if (e.actorType === 'system') names[e.actorId] ??= e.actorId === 'hub' ? 'hub' : e.actorId;
  }
  return names;
}

/** Params: JSON `[{seq, at}]`, the run id. Exported for the EXPLAIN test. */
export const FRAMES_AT_SQL = `select e.seq, (
    select c.seq from recording_chunks c
     where c.run_id = r.id
       and c.t <= case when e.at >= r.ended_at then ${Number.MAX_SAFE_INTEGER}
                       else floor(extract(epoch from (e.at - r.started_at)) * 1000) end
     order by c.t desc, c.seq desc limit 1
  ) as frame
   from json_to_recordset(?::json) as e(seq int, at timestamptz)
   join runs r on r.id = ? and r.started_at is not null`;

/**
 * By row seq: the newest recording frame of the run at the row's time — frames carry `t`, ms
 * since the run started, so the row's time is taken relative to the run's `started_at`; rows
 * from the run's end on show its last frame (the worker reports the exit only once every
 * frame is recorded, whatever the time the frames carry). One
 * statement per page; each row is one descent of `recording_chunks_run_t_idx`.
 */
export async function frameSeqsAt(tx: Em, runId: string, events: AuditEvent[]): Promise<Record<string, number>> {
  if (!events.length) return {};
  const rows = await tx.execute<{ seq: number; frame: number | null }[]>(FRAMES_AT_SQL, [JSON.stringify(events.map((e) => ({ seq: e.seq, at: e.at }))), runId]);
  const frames: Record<string, number> = {};
  for (const r of rows) if (r.frame !== null) frames[String(r.seq)] = Number(r.frame);
  return frames;
}

/**
 * The run's pane as its worker reported it with the start (the `run.start` row), or null
 * for a run started by a worker that did not report it. The row is near the chain's start.
 */
export async function recordedPane(tx: Em, runId: string): Promise<PaneInfo | null> {
  const [row] = await tx.execute<{ pane: unknown }[]>(
    `select metadata->'pane' as pane from audit_events where run_id = ? and action = 'run.start' order by seq limit 1`,
    [runId],
  );
  const pane = paneInfoSchema.safeParse(row?.pane);
  return pane.success ? pane.data : null;
}
