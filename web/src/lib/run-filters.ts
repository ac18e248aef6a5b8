import type { ControlState, Run, RunStatus, ShareFilter } from '@handoff/shared';

/** What the runs list is narrowed to; empty fields filter nothing. Mirrors `GET /api/task-runs`. */
export interface RunFilters {
  /** Title, label (key, value, `key:value`), creator or worker name, or id prefix. */
  q: string;
  status: RunStatus[];
  control: ControlState[];
  /** true: only runs asking for an operator; false: only the others; null: both. */
  needsOperator: boolean | null;
  share: ShareFilter | null;
}

export const NO_FILTERS: RunFilters = { q: '', status: [], control: [], needsOperator: null, share: null };

/** Whether any filter is set. */
export function isFiltered(f: RunFilters): boolean {
  return f.q.trim() !== '' || f.status.length > 0 || f.control.length > 0 || f.needsOperator !== null || f.share !== null;
}

/** The query string parameters of `GET /api/task-runs` for these filters. */
export function filterParams(f: RunFilters): Record<string, string> {
  const params: Record<string, string> = {};
  const q = f.q.trim();
  if (q) params.q = q;
  if (f.status.length) params.status = f.status.join(',');
  if (f.control.length) params.control = f.control.join(',');
  if (f.needsOperator !== null) params.needsOperator = String(f.needsOperator);
  if (f.share) params.share = f.share;
  return params;
}

/**
 * Whether a run (pushed live, or from another read) belongs in a list filtered by `f`: the
 * hub's rules, applied in the browser so a pushed run joins or leaves the list at once.
 */
export function matchesFilters(run: Run, f: RunFilters): boolean {
  if (f.status.length && !f.status.includes(run.status)) return false;
  if (f.control.length && !f.control.includes(run.control.state)) return false;
  if (f.needsOperator !== null && (run.needsOperator !== null) !== f.needsOperator) return false;
  if (f.share) {
    const ready = run.sessions.filter((s) => s.status === 'READY');
    const ok = f.share === 'any' ? ready.length > 0 : f.share === 'none' ? ready.length === 0 : ready.some((s) => s.provider === f.share);
    if (!ok) return false;
  }
  const q = f.q.trim().toLowerCase();
  if (!q) return true;
  const contains = (text: string | null) => text !== null && text.toLowerCase().includes(q);
  return (
    contains(run.title) ||
    Object.entries(run.labels).some(([k, v]) => contains(k) || contains(v) || contains(`${k}:${v}`)) ||
    contains(run.createdByName) ||
    contains(run.workerName) ||
    run.id.toLowerCase().startsWith(q)
  );
}

/** Runs asking for an operator first (the longest waiting on top), then the rest in their order. */
export function attentionFirst(runs: readonly Run[]): Run[] {
  const asking = runs.filter((r) => r.needsOperator !== null).sort((a, b) => a.needsOperator!.at.localeCompare(b.needsOperator!.at));
  return [...asking, ...runs.filter((r) => r.needsOperator === null)];
}
